import assert from "node:assert/strict";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { chainFileName, chainLines, type ChainState, formatChainHeader, genesisState, toHex } from "./entry_chain.ts";
import { type EncryptionKey, isSealed, keyFromBytes, sealedRecordEnds, SealedWriter } from "./sealed_file.ts";
import { type ArchiverOptions, selectForRetention, StoreArchiver } from "./store_archiver.ts";
import { dataFileName, readStoreFile, readStoreText } from "./store_files.ts";

const enc = new TextEncoder();
const onWindows = Deno.build.os === "windows";
const DAY = 86_400_000;
const gzipAsync = promisify(gzip);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-archiver-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** One stored file as written: its plain data, chain-file text and the chain before and after it. */
interface Written {
  index: number;
  plain: Uint8Array;
  chainText: string;
  before: ChainState;
  after: ChainState;
}

/** JSON lines with ids from `from`, each padded with `pad` hex characters of noise. */
function lines(from: number, n: number, pad = 16): Uint8Array {
  let text = "";
  for (let i = 0; i < n; i++) {
    const noise = Array.from(crypto.getRandomValues(new Uint8Array(pad / 2)), (b) => b.toString(16).padStart(2, "0"));
    text += JSON.stringify({ id: from + i, noise: noise.join("") }) + "\n";
  }
  return enc.encode(text);
}

/**
 * Writes data files `first`..`last` (each with `perFile` entries, encrypted
 * under `key` if given) and their chain files, as the store writes them.
 */
async function writeStore(
  dir: string,
  count: number,
  opts: { key?: EncryptionKey; perFile?: number; pad?: number } = {},
): Promise<Written[]> {
  const out: Written[] = [];
  let state = genesisState();
  for (let index = 1; index <= count; index++) {
    const plain = lines(state.seq + 1, opts.perFile ?? 3, opts.pad);
    const chained = chainLines(state, plain);
    const chainText = formatChainHeader(index, state) + chained.records;
    await Deno.writeTextFile(join(dir, chainFileName(index)), chainText, { mode: 0o600 });
    let bytes = plain;
    if (opts.key) {
      const w = await SealedWriter.create(opts.key);
      const record = await w.seal(plain);
      bytes = new Uint8Array(w.header.length + record.length);
      bytes.set(w.header);
      bytes.set(record, w.header.length);
    }
    await Deno.writeFile(join(dir, dataFileName(index, { enc: opts.key !== undefined })), bytes, { mode: 0o600 });
    out.push({ index, plain, chainText, before: state, after: chained.state });
    state = chained.state;
  }
  return out;
}

/** Sets the modification time of every file of number `index` to `ms`. */
async function setClosedTime(dir: string, index: number, ms: number): Promise<void> {
  const prefix = `tlslog-${String(index).padStart(8, "0")}.`;
  for (const name of await names(dir)) {
    if (name.startsWith(prefix)) await Deno.utime(join(dir, name), new Date(ms), new Date(ms));
  }
}

function archiver(dir: string, options: Partial<ArchiverOptions> = {}): { a: StoreArchiver; logs: string[] } {
  const logs: string[] = [];
  const a = new StoreArchiver({
    dir,
    compress: true,
    retention: {},
    beforeDelete: () => Promise.resolve(),
    log: (m) => logs.push(m),
    ...options,
  });
  return { a, logs };
}

const gzNames = (index: number, encrypted = false) => [
  chainFileName(index) + ".gz",
  dataFileName(index, { gz: true, enc: encrypted }),
];
const plainNames = (
  index: number,
  encrypted = false,
) => [chainFileName(index), dataFileName(index, { enc: encrypted })];

// --- selectForRetention --------------------------------------------------------------------------------------------

const closedAt = (...ms: number[]) => ms.map((closedMs, i) => ({ index: i + 1, closedMs }));

Deno.test("selectForRetention() keeps at most `files` files, the open one counted", () => {
  const closed = closedAt(0, 0, 0, 0, 0);
  assert.deepStrictEqual(selectForRetention(closed, 1, { files: 3 }, 0), [1, 2, 3]);
  assert.deepStrictEqual(selectForRetention(closed, 0, { files: 3 }, 0), [1, 2]);
  assert.deepStrictEqual(selectForRetention(closed, 1, { files: 6 }, 0), []);
  assert.deepStrictEqual(selectForRetention(closed, 1, { files: 10 }, 0), []);
  assert.deepStrictEqual(selectForRetention([], 1, { files: 1 }, 0), []);
});

Deno.test("selectForRetention() never goes beyond the closed list", () => {
  const closed = closedAt(0, 0);
  assert.deepStrictEqual(selectForRetention(closed, 1, { files: 0 }, 0), [1, 2]);
  assert.deepStrictEqual(selectForRetention(closed, 1, { files: 1 }, 0), [1, 2]);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 1 }, 100 * DAY), [1, 2]);
});

Deno.test("selectForRetention() deletes files closed more than `days` ago", () => {
  const closed = closedAt(1 * DAY, 2 * DAY, 3 * DAY, 4 * DAY);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 2 }, 5 * DAY), [1, 2]);
  // Closed exactly at the cutoff: kept.
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 2 }, 4 * DAY), [1]);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 3 }, 5 * DAY), [1]);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 0.5 }, 4 * DAY), [1, 2, 3]);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 30 }, 5 * DAY), []);
});

Deno.test("selectForRetention() with both limits deletes what either asks for", () => {
  const closed = closedAt(1 * DAY, 2 * DAY, 3 * DAY, 4 * DAY);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 2.5, files: 4 }, 5 * DAY), [1, 2]);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 10, files: 2 }, 5 * DAY), [1, 2, 3]);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 10, files: 10 }, 5 * DAY), []);
  assert.deepStrictEqual(selectForRetention(closed, 1, {}, 5 * DAY), []);
});

Deno.test("selectForRetention() returns a prefix only, oldest first", () => {
  // File 2 looks newer than file 3 (a clock step): deletion stops at it.
  const closed = closedAt(1 * DAY, 9 * DAY, 1 * DAY, 1 * DAY);
  assert.deepStrictEqual(selectForRetention(closed, 1, { days: 2 }, 5 * DAY), [1]);
  // Given out of order, still taken by index.
  const shuffled = [{ index: 7, closedMs: 0 }, { index: 5, closedMs: 0 }, { index: 6, closedMs: 0 }];
  assert.deepStrictEqual(selectForRetention(shuffled, 1, { files: 2 }, 0), [5, 6]);
  // Property: for random inputs the result is always a prefix of the sorted indices.
  for (let round = 0; round < 200; round++) {
    const n = Math.floor(Math.random() * 8);
    const list = Array.from({ length: n }, (_, i) => ({ index: i + 10, closedMs: Math.random() * 10 * DAY }));
    const policy = { days: Math.random() * 10, files: Math.floor(Math.random() * 10) };
    const got = selectForRetention(list, round % 2, policy, 10 * DAY);
    assert.deepStrictEqual(got, list.slice(0, got.length).map((c) => c.index));
    assert.ok(got.length <= n);
    // The files limit is met unless everything closed is deleted.
    assert.ok(n + (round % 2) - got.length <= policy.files || got.length === n);
  }
});

Deno.test("StoreArchiver rejects a negative or non-numeric retention limit", () => {
  assert.throws(() => archiver("/nonexistent", { retention: { days: -1 } }), RangeError);
  assert.throws(() => archiver("/nonexistent", { retention: { files: 1.5 } }), RangeError);
  assert.throws(() => archiver("/nonexistent", { retention: { days: NaN } }), RangeError);
});

// --- compression ---------------------------------------------------------------------------------------------------

Deno.test("closed() compresses the data and chain files, keeping content, mode and mtime", async () => {
  await withDir(async (dir) => {
    const written = await writeStore(dir, 2);
    const closedMs = Date.UTC(2024, 0, 2, 3, 4, 5);
    await setClosedTime(dir, 1, closedMs);
    const before = (await Deno.stat(join(dir, dataFileName(1)))).size;
    const compressed: { index: number; name: string; bytesBefore: number; bytesAfter: number }[] = [];
    const { a, logs } = archiver(dir, { onCompressed: (info) => compressed.push(info) });
    a.closed(1, 2);
    a.closed(2, 2); // the file being written: never touched
    await a.close();
    assert.deepStrictEqual(await names(dir), [...gzNames(1), ...plainNames(2)].sort());
    assert.deepStrictEqual(await readStoreFile(dir, dataFileName(1, { gz: true })), written[0]!.plain);
    assert.equal(await readStoreText(dir, chainFileName(1) + ".gz"), written[0]!.chainText);
    assert.deepStrictEqual(await Deno.readFile(join(dir, dataFileName(2))), written[1]!.plain);
    for (const name of gzNames(1)) {
      const info = await Deno.stat(join(dir, name));
      if (!onWindows) assert.equal(info.mode! & 0o777, 0o600, name);
      assert.equal(info.mtime?.getTime(), closedMs, name);
    }
    const data = compressed.find((c) => c.name === dataFileName(1, { gz: true }));
    assert.ok(data);
    assert.equal(data.index, 1);
    assert.equal(data.bytesBefore, before);
    assert.equal(data.bytesAfter, (await Deno.stat(join(dir, data.name))).size);
    assert.deepStrictEqual(compressed.map((c) => c.name).sort(), gzNames(1));
    assert.equal(a.failures, 0, logs.join("\n"));
  });
});

Deno.test("closed() compresses an encrypted file into a sealed gzip stream in records of at most 1 MiB", async () => {
  await withDir(async (dir) => {
    const key = await keyFromBytes(crypto.getRandomValues(new Uint8Array(32)));
    // ~2.6 MB of hex noise gzips to ~1.4 MB: more than one sealed record.
    const written = await writeStore(dir, 2, { key, perFile: 20_000, pad: 128 });
    const { a, logs } = archiver(dir, { encryptKey: key });
    a.closed(1, 2);
    await a.close();
    assert.equal(a.failures, 0, logs.join("\n"));
    assert.deepStrictEqual(await names(dir), [...gzNames(1, true), ...plainNames(2, true)].sort());
    const name = dataFileName(1, { gz: true, enc: true });
    const raw = await Deno.readFile(join(dir, name));
    assert.ok(isSealed(raw));
    assert.ok(sealedRecordEnds(raw).length >= 2, "more than one record");
    assert.equal(sealedRecordEnds(raw).at(-1), raw.length);
    assert.deepStrictEqual(await readStoreFile(dir, name, [key]), written[0]!.plain);
    // The chain file is compressed but never encrypted.
    assert.equal(await readStoreText(dir, chainFileName(1) + ".gz"), written[0]!.chainText);
    if (!onWindows) assert.equal((await Deno.stat(join(dir, name))).mode! & 0o777, 0o600);
  });
});

Deno.test("compressing an encrypted file without the key fails, is counted and leaves it as it is", async () => {
  await withDir(async (dir) => {
    const key = await keyFromBytes(crypto.getRandomValues(new Uint8Array(32)));
    await writeStore(dir, 2, { key });
    const before = await names(dir);
    const { a, logs } = archiver(dir);
    a.closed(1, 2);
    await a.close();
    assert.equal(a.failures, 1);
    assert.match(logs.join("\n"), /encrypted/);
    assert.deepStrictEqual(await names(dir), before);
  });
});

Deno.test("sweep() removes leftovers and stale temporary files and compresses closed files, not the current", async () => {
  await withDir(async (dir) => {
    const written = await writeStore(dir, 4);
    // File 1: compressed, but the originals were left behind by a crash.
    for (const name of [dataFileName(1), chainFileName(1)]) {
      const bytes = await Deno.readFile(join(dir, name));
      await Deno.writeFile(join(dir, name + ".gz"), new Uint8Array(await gzipAsync(bytes)), { mode: 0o600 });
    }
    // File 3: a stale temporary chain file of an interrupted compression.
    await Deno.writeTextFile(join(dir, chainFileName(3) + ".gz.tmp"), "partial");
    const { a, logs } = archiver(dir);
    a.sweep(4);
    await a.close();
    assert.equal(a.failures, 0, logs.join("\n"));
    assert.deepStrictEqual(await names(dir), [...gzNames(1), ...gzNames(2), ...gzNames(3), ...plainNames(4)].sort());
    for (const w of written.slice(0, 3)) {
      assert.deepStrictEqual(await readStoreFile(dir, dataFileName(w.index, { gz: true })), w.plain);
      assert.equal(await readStoreText(dir, chainFileName(w.index) + ".gz"), w.chainText);
    }
  });
});

Deno.test("sweep() without compression only removes leftovers", async () => {
  await withDir(async (dir) => {
    await writeStore(dir, 3);
    const bytes = await Deno.readFile(join(dir, dataFileName(1)));
    await Deno.writeFile(join(dir, dataFileName(1, { gz: true })), new Uint8Array(await gzipAsync(bytes)));
    const { a } = archiver(dir, { compress: false });
    a.sweep(3);
    await a.close();
    assert.equal(a.failures, 0);
    assert.deepStrictEqual(
      await names(dir),
      [chainFileName(1), dataFileName(1, { gz: true }), ...plainNames(2), ...plainNames(3)].sort(),
    );
  });
});

Deno.test("crash safety: a .jsonl.gz.tmp next to its original is removed and the original recompressed", async () => {
  await withDir(async (dir) => {
    const written = await writeStore(dir, 2);
    // A crash while writing the compressed file: half a gzip stream under the temporary name.
    const full = new Uint8Array(await gzipAsync(written[0]!.plain));
    await Deno.writeFile(join(dir, dataFileName(1, { gz: true }) + ".tmp"), full.subarray(0, full.length >> 1));
    const { a, logs } = archiver(dir);
    a.sweep(2);
    await a.close();
    assert.equal(a.failures, 0, logs.join("\n"));
    assert.deepStrictEqual(await names(dir), [...gzNames(1), ...plainNames(2)].sort());
    assert.deepStrictEqual(await readStoreFile(dir, dataFileName(1, { gz: true })), written[0]!.plain);
  });
});

Deno.test("close() stops accepting work", async () => {
  await withDir(async (dir) => {
    await writeStore(dir, 2);
    const { a } = archiver(dir);
    await a.close();
    a.closed(1, 2);
    a.sweep(2);
    await a.idle();
    assert.deepStrictEqual(await names(dir), [...plainNames(1), ...plainNames(2)].sort());
  });
});

// --- retention -----------------------------------------------------------------------------------------------------

Deno.test("enforce() deletes the oldest files only after beforeDelete resolved, with the chain state where they end", async () => {
  await withDir(async (dir) => {
    const written = await writeStore(dir, 5);
    const calls: { seq: number; head: string; throughFile: number; present: boolean }[] = [];
    const deleted: { files: string[]; throughSeq: number }[] = [];
    const { a, logs } = archiver(dir, {
      compress: false,
      retention: { files: 3 },
      beforeDelete: async (pruned) => {
        await new Promise((r) => setTimeout(r, 20));
        calls.push({ ...pruned, head: toHex(pruned.head), present: await exists(join(dir, dataFileName(1))) });
      },
      onDeleted: (info) => deleted.push(info),
    });
    a.enforce(5);
    await a.close();
    assert.equal(a.failures, 0, logs.join("\n"));
    assert.deepStrictEqual(calls, [{
      seq: written[1]!.after.seq,
      head: toHex(written[1]!.after.head),
      throughFile: 2,
      present: true,
    }]);
    assert.equal(calls[0]!.seq, 6);
    assert.deepStrictEqual(await names(dir), [...plainNames(3), ...plainNames(4), ...plainNames(5)].sort());
    assert.deepStrictEqual(deleted, [{
      files: [...plainNames(1).reverse(), ...plainNames(2).reverse()],
      throughSeq: 6,
    }]);
    assert.match(logs.join("\n"), /deleted 4 files/);
  });
});

Deno.test("enforce() does not delete when beforeDelete rejects, and counts the failure", async () => {
  await withDir(async (dir) => {
    await writeStore(dir, 4);
    const before = await names(dir);
    let deletedCalls = 0;
    const { a, logs } = archiver(dir, {
      compress: false,
      retention: { files: 1 },
      beforeDelete: () => Promise.reject(new Error("checkpoint signing failed")),
      onDeleted: () => deletedCalls++,
    });
    a.enforce(4);
    await a.idle();
    assert.equal(a.failures, 1);
    assert.match(logs.join("\n"), /checkpoint signing failed/);
    assert.match(logs.join("\n"), /nothing deleted/);
    assert.equal(deletedCalls, 0);
    assert.deepStrictEqual(await names(dir), before);
    // The next attempt tries again.
    a.enforce(4);
    await a.close();
    assert.equal(a.failures, 2);
  });
});

Deno.test("enforce() by age goes by the time a file was closed, kept through compression", async () => {
  await withDir(async (dir) => {
    const written = await writeStore(dir, 4);
    for (let i = 1; i <= 4; i++) await setClosedTime(dir, i, i * DAY);
    const pruned: number[] = [];
    const { a, logs } = archiver(dir, {
      retention: { days: 7.5 },
      now: () => 10 * DAY,
      beforeDelete: (p) => {
        pruned.push(p.seq, p.throughFile);
        return Promise.resolve();
      },
    });
    // Cutoff at day 2.5: files 1 and 2 are due, after compression too.
    a.sweep(4);
    await a.close();
    assert.equal(a.failures, 0, logs.join("\n"));
    assert.deepStrictEqual(pruned, [written[1]!.after.seq, 2]);
    assert.deepStrictEqual(await names(dir), [...gzNames(3), ...plainNames(4)].sort());
  });
});

Deno.test("closed() compresses, then applies retention reading the kept file's compressed chain header", async () => {
  await withDir(async (dir) => {
    const written = await writeStore(dir, 4);
    const calls: { seq: number; head: string; throughFile: number }[] = [];
    const deleted: { files: string[]; throughSeq: number }[] = [];
    const { a, logs } = archiver(dir, {
      retention: { files: 2 },
      beforeDelete: (p) => {
        calls.push({ ...p, head: toHex(p.head) });
        return Promise.resolve();
      },
      onDeleted: (info) => deleted.push(info),
    });
    for (let i = 1; i <= 3; i++) {
      a.closed(i, i + 1);
      await a.idle();
    }
    await a.close();
    assert.equal(a.failures, 0, logs.join("\n"));
    assert.deepStrictEqual(calls, [
      { seq: written[0]!.after.seq, head: toHex(written[0]!.after.head), throughFile: 1 },
      { seq: written[1]!.after.seq, head: toHex(written[1]!.after.head), throughFile: 2 },
    ]);
    assert.deepStrictEqual(deleted, [
      { files: gzNames(1).reverse(), throughSeq: 3 },
      { files: gzNames(2).reverse(), throughSeq: 6 },
    ]);
    assert.deepStrictEqual(await names(dir), [...gzNames(3), ...plainNames(4)].sort());
  });
});

Deno.test("enforce() with no file after the deleted ones takes the chain end from the last deleted chain file", async () => {
  await withDir(async (dir) => {
    const written = await writeStore(dir, 3);
    for (let i = 1; i <= 3; i++) await setClosedTime(dir, i, 0);
    const calls: { seq: number; head: string; throughFile: number }[] = [];
    const { a, logs } = archiver(dir, {
      compress: false,
      retention: { days: 1 },
      now: () => 5 * DAY,
      beforeDelete: (p) => {
        calls.push({ ...p, head: toHex(p.head) });
        return Promise.resolve();
      },
    });
    a.enforce(4); // file 4 not created yet
    await a.close();
    assert.equal(a.failures, 0, logs.join("\n"));
    assert.deepStrictEqual(calls, [{ seq: 9, head: toHex(written[2]!.after.head), throughFile: 3 }]);
    assert.deepStrictEqual(await names(dir), []);
  });
});

Deno.test("enforce() without the kept file's chain file deletes nothing", async () => {
  await withDir(async (dir) => {
    await writeStore(dir, 3);
    await Deno.remove(join(dir, chainFileName(2)));
    let called = false;
    const { a, logs } = archiver(dir, {
      compress: false,
      retention: { files: 2 },
      beforeDelete: () => {
        called = true;
        return Promise.resolve();
      },
    });
    a.enforce(3);
    await a.close();
    assert.equal(called, false);
    assert.equal(a.failures, 1);
    assert.ok(logs.some((l) => l.includes("no chain file")));
    assert.ok(await exists(join(dir, dataFileName(1))));
  });
});
