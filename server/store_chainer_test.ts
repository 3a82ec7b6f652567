import assert from "node:assert/strict";
import { join } from "node:path";
import { StoreChainer } from "./store_chainer.ts";
import { ChainHasher } from "./chain_hasher.ts";
import {
  chainFileName,
  chainLines,
  type ChainState,
  formatChainHeader,
  genesisState,
  parseChainFile,
  toHex,
} from "./entry_chain.ts";
import { concatBytes } from "../shared/bytes.ts";

const enc = new TextEncoder();
/** `n` JSON lines with ids from `from`, of varying length, newline-terminated. */
const lines = (from: number, n: number) =>
  enc.encode(
    Array.from({ length: n }, (_, i) => JSON.stringify({ id: from + i, pad: "x".repeat((from + i) % 7) }) + "\n")
      .join(""),
  );

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const stateText = (s: ChainState) => `${s.seq} ${toHex(s.head)}`;

/** Whether this process has `path` open (Linux: /proc/self/fd); null where that cannot be told. */
function isOpen(path: string): boolean | null {
  if (Deno.build.os !== "linux") return null;
  const real = Deno.realPathSync(path);
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${e.name}`) === real) return true;
    } catch {
      // The fd of the directory listing itself, closed by now.
    }
  }
  return false;
}

/** A chain state that is not genesis, as if files before these were chained already. */
const START: ChainState = chainLines(genesisState(), lines(1000, 5)).state;

/** Chunks of data files 1 (two chunks), 2 (one) and 3 (three), in commit order. */
const CHUNKS: { index: number; data: Uint8Array }[] = [
  { index: 1, data: lines(0, 3) },
  { index: 1, data: lines(3, 2) },
  { index: 2, data: lines(5, 4) },
  { index: 3, data: lines(9, 1) },
  { index: 3, data: lines(10, 3) },
  { index: 3, data: lines(13, 2) },
];

/** The chain files CHUNKS must give, chained on from `start`: name -> text; and the state after them. */
function expectedFiles(start: ChainState): { files: Map<string, string>; state: ChainState } {
  const files = new Map<string, string>();
  let state = start;
  for (const index of [...new Set(CHUNKS.map((c) => c.index))]) {
    const data = concatBytes(CHUNKS.filter((c) => c.index === index).map((c) => c.data));
    const chained = chainLines(state, data);
    files.set(chainFileName(index), formatChainHeader(index, state) + chained.records);
    state = chained.state;
  }
  return { files, state };
}

async function readChainFiles(dir: string): Promise<Map<string, string>> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  const out = new Map<string, string>();
  for (const name of names.sort()) out.set(name, await Deno.readTextFile(join(dir, name)));
  return out;
}

/** Enqueues CHUNKS into a chainer in `dir` (hashing with `hasher`), closes it, returns its final state. */
async function chainAll(dir: string, hasher: ChainHasher | null, sync = false): Promise<ChainState> {
  const chainer = new StoreChainer({ dir, sync, hasher }, START);
  for (const { index, data } of CHUNKS) chainer.enqueue(index, data);
  await chainer.close();
  assert.equal(chainer.failure, null);
  return chainer.state;
}

Deno.test("StoreChainer (inline) writes one chain file per data file, each header continuing the previous", async () => {
  await withDir(async (dir) => {
    const state = await chainAll(dir, null, true);
    const expected = expectedFiles(START);
    const files = await readChainFiles(dir);
    assert.deepStrictEqual([...files.keys()], [1, 2, 3].map(chainFileName));
    assert.deepStrictEqual(files, expected.files);
    // The headers name where the previous file ended, the first where the chain stood before.
    const parsed = [...files].map(([name, text]) => parseChainFile(text, name));
    assert.deepStrictEqual(parsed.map((p) => p.file), [1, 2, 3]);
    assert.deepStrictEqual(parsed.map((p) => p.prev.seq), [5, 10, 14]);
    assert.equal(toHex(parsed[0]!.prev.head), toHex(START.head));
    for (let i = 1; i < parsed.length; i++) {
      const last = parsed[i - 1]!.records.at(-1)!;
      assert.equal(parsed[i]!.prev.seq, last.seq);
      assert.equal(toHex(parsed[i]!.prev.head), toHex(last.hash));
    }
    // All records together are chainLines() over all the data in order.
    const all = chainLines(START, concatBytes(CHUNKS.map((c) => c.data)));
    const records = [...files.values()].map((t) => t.slice(t.indexOf("\n") + 1)).join("");
    assert.equal(records, all.records);
    assert.equal(stateText(state), stateText(all.state));
    assert.equal(stateText(state), stateText(expected.state));
    for (const name of files.keys()) assert.equal((await Deno.stat(join(dir, name))).mode! & 0o777, 0o600, name);
  });
});

Deno.test("StoreChainer hashing in a ChainHasher worker writes byte-identical chain files", async () => {
  const inlineDir = await Deno.makeTempDir();
  const workerDir = await Deno.makeTempDir();
  const hasher = new ChainHasher();
  try {
    const inline = await chainAll(inlineDir, null);
    const worker = await chainAll(workerDir, hasher);
    assert.equal(stateText(worker), stateText(inline));
    const files = await readChainFiles(workerDir);
    assert.equal(files.size, 3);
    assert.deepStrictEqual(files, await readChainFiles(inlineDir));
    assert.deepStrictEqual(files, expectedFiles(START).files);
    for (const name of files.keys()) assert.equal((await Deno.stat(join(workerDir, name))).mode! & 0o777, 0o600);
  } finally {
    hasher.close();
    await Deno.remove(inlineDir, { recursive: true });
    await Deno.remove(workerDir, { recursive: true });
  }
});

Deno.test("StoreChainer calls onFileChained(k) once chain file k is complete, never for the last file", async () => {
  await withDir(async (dir) => {
    const expected = expectedFiles(START);
    const seen: { index: number; text: string; lastSeq: number | undefined; open: boolean | null }[] = [];
    const chainer = new StoreChainer({
      dir,
      sync: true,
      hasher: null,
      onFileChained: (index) => {
        const name = chainFileName(index);
        const text = Deno.readTextFileSync(join(dir, name));
        seen.push({
          index,
          text,
          lastSeq: parseChainFile(text, name).records.at(-1)?.seq,
          open: isOpen(join(dir, name)),
        });
      },
    }, START);
    // Enqueued a chunk at a time, with the chainer idle in between too: files 1 and 2 are only done once 3 starts.
    for (const { index, data } of CHUNKS.slice(0, 3)) chainer.enqueue(index, data);
    await chainer.idle();
    assert.deepStrictEqual(seen.map((s) => s.index), [1]);
    for (const { index, data } of CHUNKS.slice(3)) chainer.enqueue(index, data);
    await chainer.idle();
    assert.deepStrictEqual(seen.map((s) => s.index), [1, 2]);
    // The file being chained is open (so the check in the callback can see an open file).
    if (Deno.build.os === "linux") assert.equal(isOpen(join(dir, chainFileName(3))), true);
    await chainer.close();
    if (Deno.build.os === "linux") assert.equal(isOpen(join(dir, chainFileName(3))), false);
    assert.deepStrictEqual(seen.map((s) => s.index), [1, 2]);
    // Inside the callback the file already held every record of its data file, and was closed.
    assert.deepStrictEqual(seen.map((s) => s.lastSeq), [10, 14]);
    if (Deno.build.os === "linux") assert.deepStrictEqual(seen.map((s) => s.open), [false, false]);
    for (const s of seen) assert.equal(s.text, expected.files.get(chainFileName(s.index)));
    assert.equal(chainer.failure, null);
  });
});

Deno.test("StoreChainer.room() resolves at once under the bound and waits for the queue to drain over it", async () => {
  await withDir(async (dir) => {
    const chainer = new StoreChainer({ dir, sync: false, hasher: null, maxQueuedBytes: 100 }, genesisState());
    const settledNow = async (p: Promise<void>) => {
      let settled = false;
      p.then(() => settled = true);
      // A few microtask turns: enough for a resolved promise, far too few for any file I/O.
      for (let i = 0; i < 5; i++) await Promise.resolve();
      return settled;
    };
    assert.ok(await settledNow(chainer.room()), "room() with nothing queued");
    // Exactly at the bound is still room: the chain is left behind the writer.
    const small = enc.encode("a".repeat(99) + "\n");
    chainer.enqueue(1, small);
    assert.ok(await settledNow(chainer.room()), "room() with the bound queued");
    assert.equal(chainer.state.seq, 0, "room() under the bound must not wait for hashing");
    await chainer.idle();
    assert.equal(chainer.state.seq, 1);
    // Over the bound: room() waits until everything queued is hashed and written.
    const big = [lines(1, 10), lines(11, 10), lines(21, 10)];
    for (const data of big) chainer.enqueue(1, data);
    let queuedSeq = -1;
    await chainer.room().then(() => queuedSeq = chainer.state.seq);
    assert.equal(queuedSeq, 31);
    const expected = chainLines(genesisState(), concatBytes([small, ...big]));
    assert.equal(stateText(chainer.state), stateText(expected.state));
    await chainer.close();
    assert.equal(
      await Deno.readTextFile(join(dir, chainFileName(1))),
      formatChainHeader(1, genesisState()) + expected.records,
    );
  });
});

Deno.test("StoreChainer.idle() resolves at once with nothing queued, and after all queued chunks otherwise", async () => {
  await withDir(async (dir) => {
    const chainer = new StoreChainer({ dir, sync: false, hasher: null }, genesisState());
    await chainer.idle();
    await chainer.close();
    assert.deepStrictEqual([...await readChainFiles(dir)], [], "no chain file without data");
    const again = new StoreChainer({ dir, sync: false, hasher: null }, genesisState());
    again.enqueue(4, lines(0, 3));
    const idle = again.idle();
    again.enqueue(4, lines(3, 2));
    await idle;
    // idle() covers what was queued while the chainer was running.
    assert.equal(again.state.seq, 5);
    await again.close();
  });
});

Deno.test("StoreChainer: a failed chain-file create sets failure, drops the queue, idle() resolves, enqueue is ignored", async () => {
  await withDir(async (dir) => {
    // A chain file for data file 2 already exists (createNew refuses it).
    const squatter = join(dir, chainFileName(2));
    await Deno.writeTextFile(squatter, "not ours\n");
    const chained: number[] = [];
    const chainer = new StoreChainer(
      { dir, sync: false, hasher: null, maxQueuedBytes: 10, onFileChained: (i) => chained.push(i) },
      START,
    );
    const one = lines(0, 3);
    chainer.enqueue(1, one);
    chainer.enqueue(2, lines(3, 2));
    chainer.enqueue(2, lines(5, 2));
    chainer.enqueue(3, lines(7, 2));
    await chainer.idle();
    assert.ok(chainer.failure instanceof Deno.errors.AlreadyExists, String(chainer.failure));
    // The chain stops after file 1; nothing of files 2 and 3 was hashed or written.
    const afterOne = chainLines(START, one);
    assert.equal(stateText(chainer.state), stateText(afterOne.state));
    assert.equal(await Deno.readTextFile(squatter), "not ours\n");
    assert.equal(
      await Deno.readTextFile(join(dir, chainFileName(1))),
      formatChainHeader(1, START) + afterOne.records,
    );
    assert.deepStrictEqual([...(await readChainFiles(dir)).keys()], [1, 2].map(chainFileName));
    // The queue was dropped: room() is not held back by what will never be hashed.
    let roomy = false;
    chainer.room().then(() => roomy = true);
    await Promise.resolve();
    await Promise.resolve();
    assert.ok(roomy);
    // Later chunks are ignored; idle() still resolves.
    const failure = chainer.failure;
    chainer.enqueue(3, lines(9, 5));
    await chainer.idle();
    assert.equal(stateText(chainer.state), stateText(afterOne.state));
    assert.equal(chainer.failure, failure);
    await chainer.close();
    assert.equal(chainer.failure, failure);
    assert.deepStrictEqual([...(await readChainFiles(dir)).keys()], [1, 2].map(chainFileName));
    assert.deepStrictEqual(chained, [1]);
  });
});

Deno.test("StoreChainer: a hasher closed under it is a failure, not a hang", async () => {
  await withDir(async (dir) => {
    const hasher = new ChainHasher();
    hasher.close();
    const chainer = new StoreChainer({ dir, sync: false, hasher }, genesisState());
    chainer.enqueue(1, lines(0, 2));
    chainer.enqueue(1, lines(2, 2));
    await chainer.idle();
    assert.equal(chainer.failure?.name, "ChainHasherError");
    assert.equal(chainer.state.seq, 0);
    await chainer.close();
  });
});

Deno.test("StoreChainer state after close equals chainLines() over everything enqueued", async () => {
  await withDir(async (dir) => {
    const chainer = new StoreChainer({ dir, sync: false, hasher: null }, genesisState());
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) {
      const data = lines(i * 3, 1 + (i % 4));
      parts.push(data);
      chainer.enqueue(1 + Math.floor(i / 10), data);
      if (i % 7 === 0) await chainer.idle();
    }
    await chainer.close();
    const all = chainLines(genesisState(), concatBytes(parts));
    assert.equal(stateText(chainer.state), stateText(all.state));
    const files = await readChainFiles(dir);
    assert.deepStrictEqual([...files.keys()], [1, 2, 3, 4].map(chainFileName));
    for (const name of files.keys()) assert.equal((await Deno.stat(join(dir, name))).mode! & 0o777, 0o600, name);
    const records = [...files.values()].map((t) => t.slice(t.indexOf("\n") + 1)).join("");
    assert.equal(records, all.records);
  });
});
