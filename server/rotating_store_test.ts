import assert from "node:assert/strict";
import { join } from "node:path";
import { dataFileName, listDataFiles, offsetAfterLines, RotatingStore, StoreError } from "./rotating_store.ts";
import { COMMIT_LOG_NAME, replayCommitLog } from "./commit_log.ts";
import {
  chainFileName,
  chainLines,
  type ChainState,
  formatChainHeader,
  GENESIS,
  genesisState,
  parseChainFile,
  sameHash,
  toHex,
} from "./entry_chain.ts";
import { type EncryptionKey, EncryptionKeyError, isSealed, keyFromBytes } from "./sealed_file.ts";
import { listStoreFiles, readStoreFile, readStoreText } from "./store_files.ts";

const enc = new TextEncoder();
const lines = (from: number, n: number) =>
  enc.encode(Array.from({ length: n }, (_, i) => JSON.stringify({ id: from + i }) + "\n").join(""));

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function contents(dir: string): Promise<string[][]> {
  const out: string[][] = [];
  for (const name of await listDataFiles(dir)) {
    out.push((await Deno.readTextFile(join(dir, name))).split("\n").filter(Boolean));
  }
  return out;
}

Deno.test("offsetAfterLines() finds the end of the n-th line", () => {
  const data = enc.encode("a\nbb\nccc\n");
  assert.deepStrictEqual([1, 2, 3, 4].map((n) => offsetAfterLines(data, n)), [2, 5, 9, -1]);
});

Deno.test("RotatingStore.append() starts a new file every rotateEntries entries, splitting batches", async () => {
  await withDir(async (dir) => {
    const created: string[] = [];
    const store = await RotatingStore.open({ dir, rotateEntries: 10, onFileCreated: (p) => created.push(p) });
    await Promise.all([store.append(lines(0, 7), 7), store.append(lines(7, 18), 18)]);
    await store.append(lines(25, 1), 1);
    await store.close();
    const files = await contents(dir);
    assert.deepStrictEqual(files.map((f) => f.length), [10, 10, 6]);
    assert.deepStrictEqual(files.flat().map((l) => JSON.parse(l).id), Array.from({ length: 26 }, (_, i) => i));
    assert.deepStrictEqual(created.map((p) => p.slice(dir.length + 1)), [1, 2, 3].map((i) => dataFileName(i)));
    for (const path of created) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});

Deno.test("RotatingStore.open() continues the numbering after a restart; names sort in write order", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 2 });
    await store.append(lines(0, 3), 3);
    await store.close();
    store = await RotatingStore.open({ dir, rotateEntries: 2 });
    await store.append(lines(3, 1), 1);
    await store.close();
    const names = await listDataFiles(dir);
    assert.deepStrictEqual(names, ["tlslog-00000001.jsonl", "tlslog-00000002.jsonl", "tlslog-00000003.jsonl"]);
    assert.deepStrictEqual([...names].sort(), names);
    assert.deepStrictEqual((await contents(dir)).flat().map((l) => JSON.parse(l).id), [0, 1, 2, 3]);
  });
});

Deno.test("RotatingStore refuses appends after close and a bad rotateEntries", async () => {
  await withDir(async (dir) => {
    await assert.rejects(RotatingStore.open({ dir, rotateEntries: 0 }), StoreError);
    const store = await RotatingStore.open({ dir, rotateEntries: 5 });
    await store.close();
    await assert.rejects(store.append(lines(0, 1), 1), StoreError);
  });
});

Deno.test("RotatingStore.barrier() resolves only after earlier appends are written", async () => {
  await withDir(async (dir) => {
    const store = await RotatingStore.open({ dir, rotateEntries: 100 });
    const order: string[] = [];
    const write = store.append(lines(0, 50), 50).then(() => order.push("append"));
    await store.barrier().then(() => order.push("barrier"));
    await write;
    assert.deepStrictEqual(order, ["append", "barrier"]);
    await store.close();
  });
});

Deno.test("RotatingStore: a commit with no data before any file is opened keeps the files after restart", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 10 });
    await store.append(lines(0, 2), 2, { stream: "a", seq: 1 });
    await store.close();
    // After a restart, a batch whose entries were all refused still records progress.
    store = await RotatingStore.open({ dir, rotateEntries: 10 });
    await store.append(new Uint8Array(0), 0, { stream: "b", seq: 1 });
    await store.close();
    store = await RotatingStore.open({ dir, rotateEntries: 10 });
    assert.deepStrictEqual([...store.recoveredStreams], [["a", 1], ["b", 1]]);
    await store.close();
    assert.deepStrictEqual((await contents(dir)).flat().map((l) => JSON.parse(l).id), [0, 1]);
  });
});

Deno.test("RotatingStore adopts data files written before the commit log, across an idle restart", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, dataFileName(1)), '{"id":0}\n{"id":1}\n');
    const notes: string[] = [];
    let store = await RotatingStore.open({ dir, rotateEntries: 10, log: (m) => notes.push(m) });
    await store.close();
    store = await RotatingStore.open({ dir, rotateEntries: 10, log: (m) => notes.push(m) });
    await store.close();
    assert.deepStrictEqual(notes, [
      "adopted 1 data files written before the commit log",
      "chained 2 entries in 1 data files written before the hash chain",
    ]);
    assert.deepStrictEqual((await contents(dir)).flat().map((l) => JSON.parse(l).id), [0, 1]);
  });
});

Deno.test("RotatingStore --fsync interval syncs under steady load, not only when idle", async () => {
  await withDir(async (dir) => {
    let syncs = 0;
    const store = await RotatingStore.open({
      dir,
      rotateEntries: 1e9,
      fsync: { kind: "interval", ms: 20 },
      onSync: () => syncs++,
    });
    const started = Date.now();
    let i = 0;
    // Appends back to back for 200 ms: the store is never idle.
    while (Date.now() - started < 200) await store.append(lines(i++, 1), 1);
    assert.ok(syncs >= 3, `only ${syncs} fsyncs in 200 ms of steady appends`);
    await store.close();
  });
});

// --- The hash chain (entry_chain.ts) kept beside the data files ---

/** Every stored line of `dir` in order, newline included, as one byte string. */
async function allLines(dir: string, keys: EncryptionKey[] = []): Promise<Uint8Array> {
  const parts: number[] = [];
  for (const name of await listDataFiles(dir)) parts.push(...await readStoreFile(dir, name, keys));
  return new Uint8Array(parts);
}

/**
 * Checks every chain file against its data file by recomputing the chain from genesis: each header names its file
 * and continues the previous file's last record, and each file's records are exactly chainLines() of its data.
 * Returns the chain state after the last entry.
 */
async function verifyChain(dir: string, keys: EncryptionKey[] = []): Promise<ChainState> {
  let state = genesisState();
  const sets = await listStoreFiles(dir);
  assert.ok(sets.length > 0);
  for (const set of sets) {
    assert.ok(set.data && set.chain, `file ${set.index}: data ${set.data}, chain ${set.chain}`);
    assert.equal(set.chain, chainFileName(set.index));
    const text = await readStoreText(dir, set.chain);
    const parsed = parseChainFile(text, set.chain);
    assert.equal(parsed.file, set.index);
    assert.equal(parsed.prev.seq, state.seq, `${set.chain} header prev_seq`);
    assert.equal(toHex(parsed.prev.head), toHex(state.head), `${set.chain} header prev`);
    const chained = chainLines(state, await readStoreFile(dir, set.data, keys));
    assert.equal(text, formatChainHeader(set.index, state) + chained.records, set.chain);
    state = chained.state;
  }
  return state;
}

const sameState = (a: ChainState, b: ChainState) =>
  [a.seq, toHex(a.head)].join(" ") === [b.seq, toHex(b.head)].join(" ");

/** Cuts the file at `path` to its first `n` lines (plus `extra` characters of the next). */
async function keepLines(path: string, n: number, extra = 0): Promise<void> {
  const text = await Deno.readTextFile(path);
  await Deno.writeTextFile(path, text.slice(0, offsetAfterLines(enc.encode(text), n) + extra));
}

Deno.test("RotatingStore writes a chain file per data file; store.chain is the chain over every line", async () => {
  await withDir(async (dir) => {
    const store = await RotatingStore.open({ dir, rotateEntries: 4 });
    assert.equal(store.chain.seq, 0);
    assert.equal(toHex(store.chain.head), toHex(GENESIS));
    await Promise.all([store.append(lines(0, 3), 3), store.append(lines(3, 6), 6)]);
    await store.append(lines(9, 2), 2);
    await store.chained();
    const chain = store.chain;
    await store.close();
    const sets = await listStoreFiles(dir);
    assert.deepStrictEqual(
      sets.map((s) => [s.data, s.chain]),
      [1, 2, 3].map((i) => [dataFileName(i), chainFileName(i)]),
    );
    for (const s of sets) assert.equal((await Deno.stat(join(dir, s.chain!))).mode! & 0o777, 0o600);
    const expected = chainLines(genesisState(), await allLines(dir)).state;
    assert.equal(expected.seq, 11);
    assert.equal(chain.seq, 11);
    assert.ok(sameHash(chain.head, expected.head));
    assert.ok(sameState(await verifyChain(dir), expected));
    // The headers name where the previous file ended.
    const headers = [];
    for (const s of sets) headers.push(parseChainFile(await Deno.readTextFile(join(dir, s.chain!)), s.chain!).prev.seq);
    assert.deepStrictEqual(headers, [0, 4, 8]);
  });
});

Deno.test("RotatingStore: store.chain continues across a restart, the new file's header where the old one ended", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 3 });
    await store.append(lines(0, 4), 4);
    await store.close();
    store = await RotatingStore.open({ dir, rotateEntries: 3 });
    assert.equal(store.chain.seq, 4);
    await store.append(lines(4, 2), 2);
    await store.chained();
    const chain = store.chain;
    await store.close();
    assert.deepStrictEqual(await listDataFiles(dir), [1, 2, 3].map((i) => dataFileName(i)));
    const all = chainLines(genesisState(), await allLines(dir)).state;
    assert.ok(sameState(chain, all));
    assert.ok(sameState(await verifyChain(dir), all));
  });
});

Deno.test("RotatingStore with encryptKey writes .jsonl.enc files that readStoreFile() gives back, chained in plain", async () => {
  await withDir(async (dir) => {
    const key = await keyFromBytes(Uint8Array.from({ length: 32 }, (_, i) => i * 3));
    let store = await RotatingStore.open({ dir, rotateEntries: 4, encryptKey: key });
    await Promise.all([store.append(lines(0, 2), 2), store.append(lines(2, 3), 3)]);
    await store.append(lines(5, 1), 1);
    await store.close();
    // Reopen with the key: the last file is read (decrypted) to bring its chain level.
    store = await RotatingStore.open({ dir, rotateEntries: 4, encryptKey: key });
    await store.append(lines(6, 1), 1);
    await store.chained();
    const chain = store.chain;
    await store.close();
    const names = await listDataFiles(dir);
    assert.deepStrictEqual(names, [1, 2, 3].map((i) => dataFileName(i, { enc: true })));
    for (const name of names) {
      const raw = await Deno.readFile(join(dir, name));
      assert.ok(isSealed(raw), name);
      assert.ok(!new TextDecoder().decode(raw).includes('"id"'), name);
    }
    const text = new TextDecoder().decode(await allLines(dir, [key]));
    assert.deepStrictEqual(text.split("\n").filter(Boolean).map((l) => JSON.parse(l).id), [0, 1, 2, 3, 4, 5, 6]);
    await assert.rejects(readStoreFile(dir, names[0]!), EncryptionKeyError);
    const all = chainLines(genesisState(), await allLines(dir, [key])).state;
    assert.ok(sameState(chain, all));
    assert.ok(sameState(await verifyChain(dir, [key]), all));
  });
});

Deno.test("RotatingStore calls onFileClosed with each closed file only once a commit covers all of its data", async () => {
  await withDir(async (dir) => {
    const closed: { index: number; committed: { file: number; offset: number } | null }[] = [];
    const lastCommit = () => {
      const text = Deno.readTextFileSync(join(dir, COMMIT_LOG_NAME));
      return replayCommitLog(text).state.position;
    };
    const store = await RotatingStore.open({
      dir,
      rotateEntries: 2,
      onFileClosed: (index) => closed.push({ index, committed: lastCommit() }),
    });
    // One group that fills files 1 and 2 and starts 3: both close during the write, before its commit.
    await store.append(lines(0, 5), 5);
    await store.chained();
    assert.deepStrictEqual(closed.map((c) => c.index), [1, 2]);
    await store.append(lines(5, 1), 1);
    await store.chained();
    assert.deepStrictEqual(closed.map((c) => c.index), [1, 2]);
    await store.append(lines(6, 1), 1);
    await store.chained();
    assert.deepStrictEqual(closed.map((c) => c.index), [1, 2, 3]);
    await store.close();
    for (const { index, committed } of closed) {
      assert.ok(
        committed !== null && committed.file > index,
        `file ${index} closed at commit ${JSON.stringify(committed)}`,
      );
    }
    // Closing the store does not report the file being written as closed.
    assert.deepStrictEqual(closed.map((c) => c.index), [1, 2, 3]);
  });
});

Deno.test("RotatingStore.open() rebuilds the tail of the last chain file lost in a crash; appends keep the chain valid", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 4 });
    for (let i = 0; i < 10; i++) await store.append(lines(i, 1), 1);
    await store.chained();
    const before = store.chain;
    await store.close();
    // Files 1 (4), 2 (4), 3 (2). The chain file is not synced with each commit: file 3 kept one record.
    const path3 = join(dir, chainFileName(3));
    const intact = await Deno.readTextFile(path3);
    await keepLines(path3, 2);
    assert.equal(parseChainFile(await Deno.readTextFile(path3), "c").records.length, 1);
    const notes: string[] = [];
    store = await RotatingStore.open({ dir, rotateEntries: 4, log: (m) => notes.push(m) });
    assert.deepStrictEqual(notes, []);
    assert.ok(sameState(store.chain, before));
    assert.equal(await Deno.readTextFile(path3), intact);
    const prev = parseChainFile(intact, "c").prev;
    const rebuilt = formatChainHeader(3, prev) + chainLines(prev, await readStoreFile(dir, dataFileName(3))).records;
    assert.equal(await Deno.readTextFile(path3), rebuilt);
    await store.append(lines(10, 5), 5);
    await store.chained();
    const after = store.chain;
    await store.close();
    assert.equal(after.seq, 15);
    const all = chainLines(genesisState(), await allLines(dir)).state;
    assert.ok(sameState(after, all));
    assert.ok(sameState(await verifyChain(dir), all));
  });
});

Deno.test("RotatingStore.open() rebuilds a last chain file cut mid-record or down to its header", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 10 });
    await store.append(lines(0, 3), 3);
    await store.close();
    const path = join(dir, chainFileName(1));
    const intact = await Deno.readTextFile(path);
    for (const [n, extra] of [[2, 30], [1, 0], [1, 10], [3, 64]]) {
      await keepLines(path, n!, extra);
      store = await RotatingStore.open({ dir, rotateEntries: 10 });
      assert.equal(store.chain.seq, 3);
      await store.close();
      assert.equal(await Deno.readTextFile(path), intact, `cut to ${n} lines + ${extra}`);
    }
  });
});

Deno.test("RotatingStore.open() cuts a chain file that describes more entries than the data kept after recovery", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 4 });
    await store.append(lines(0, 6), 6);
    await store.chained();
    const committed = store.chain;
    await store.close();
    // A group written to file 2 and its chain file but never committed (the process died before the commit record).
    const dataPath = join(dir, dataFileName(2));
    const chainPath = join(dir, chainFileName(2));
    const intact = await Deno.readTextFile(chainPath);
    const extra = lines(6, 2);
    await Deno.writeFile(dataPath, extra, { append: true });
    await Deno.writeTextFile(chainPath, chainLines(committed, extra).records, { append: true });
    assert.equal(parseChainFile(await Deno.readTextFile(chainPath), "c").records.length, 4);
    const notes: string[] = [];
    store = await RotatingStore.open({ dir, rotateEntries: 4, log: (m) => notes.push(m) });
    assert.ok(sameState(store.chain, committed));
    assert.equal(notes.length, 1);
    assert.match(notes[0]!, /^recovery: cut \d+ uncommitted bytes from the end of tlslog-00000002\.jsonl/);
    assert.equal(await Deno.readTextFile(chainPath), intact);
    await store.append(lines(6, 3), 3);
    await store.chained();
    const after = store.chain;
    await store.close();
    assert.deepStrictEqual((await contents(dir)).flat().map((l) => JSON.parse(l).id), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.ok(sameState(await verifyChain(dir), after));
    assert.equal(after.seq, 9);
  });
});

Deno.test({
  name: "RotatingStore.open() refuses a last chain file with an edited record, pointing to tlslog verify",
  fn: async () => {
    await withDir(async (dir) => {
      let store = await RotatingStore.open({ dir, rotateEntries: 10 });
      await store.append(lines(0, 5), 5);
      await store.close();
      const path = join(dir, chainFileName(1));
      const intact = await Deno.readTextFile(path);
      const edit = async (lineNo: number, replace: (line: string) => string) => {
        const l = intact.split("\n");
        l[lineNo - 1] = replace(l[lineNo - 1]!);
        await Deno.writeTextFile(path, l.join("\n"));
      };
      const flip = (line: string) => line.slice(0, -1) + (line.endsWith("0") ? "1" : "0");
      for (
        const [lineNo, replace, message] of [
          [3, flip, /tlslog-00000001\.chain line 3 does not match line 2 of tlslog-00000001\.jsonl/],
          [6, flip, /line 6 does not match line 5/],
          [4, (line: string) => line.replace(/^3 /, "4 "), /line 4 does not match line 3/],
          [2, () => "garbage", /tlslog-00000001\.chain line 2 is not a chain record/],
          [1, () => "{}", /tlslog-00000001\.chain line 1: not a chain-file header/],
        ] as const
      ) {
        await edit(lineNo, replace);
        await assert.rejects(
          RotatingStore.open({ dir, rotateEntries: 10 }),
          (err: unknown) => err instanceof StoreError && message.test(err.message) && /tlslog verify/.test(err.message),
          `line ${lineNo}`,
        );
        // The chain file is left as it is for `tlslog verify`.
        assert.notEqual(await Deno.readTextFile(path), intact);
      }
      // An edited data line is caught the same way.
      await Deno.writeTextFile(path, intact);
      const dataPath = join(dir, dataFileName(1));
      const data = await Deno.readTextFile(dataPath);
      await Deno.writeTextFile(dataPath, data.replace('{"id":3}', '{"id":8}'));
      await assert.rejects(
        RotatingStore.open({ dir, rotateEntries: 10 }),
        (err: unknown) => err instanceof StoreError && /line 5 does not match line 4 of/.test(err.message),
      );
      await Deno.writeTextFile(dataPath, data);
      store = await RotatingStore.open({ dir, rotateEntries: 10 });
      await store.close();
    });
  },
});

Deno.test({
  name: "RotatingStore.open() closes what it opened when it refuses the store",
  fn: async () => {
    await withDir(async (dir) => {
      const store = await RotatingStore.open({ dir, rotateEntries: 10 });
      await store.append(lines(0, 2), 2);
      await store.close();
      await Deno.writeTextFile(join(dir, chainFileName(1)), "garbage\n");
      await assert.rejects(RotatingStore.open({ dir, rotateEntries: 10 }), StoreError);
    });
  },
});

Deno.test("RotatingStore builds chain files from genesis for a legacy dir with data files only", async () => {
  await withDir(async (dir) => {
    const legacy = [lines(0, 3), lines(3, 2), lines(5, 4)];
    for (const [i, data] of legacy.entries()) await Deno.writeFile(join(dir, dataFileName(i + 1)), data);
    const notes: string[] = [];
    let store = await RotatingStore.open({ dir, rotateEntries: 10, log: (m) => notes.push(m) });
    const all = chainLines(genesisState(), await allLines(dir)).state;
    assert.equal(all.seq, 9);
    assert.ok(sameState(store.chain, all));
    assert.deepStrictEqual(notes, [
      "adopted 3 data files written before the commit log",
      "chained 9 entries in 3 data files written before the hash chain",
    ]);
    assert.ok(sameState(await verifyChain(dir), all));
    // The commit log now holds the chain: a restart finds it and continues in file 4.
    await store.close();
    store = await RotatingStore.open({ dir, rotateEntries: 10, log: (m) => notes.push(m) });
    assert.ok(sameState(store.chain, all));
    await store.append(lines(9, 2), 2);
    await store.chained();
    const after = store.chain;
    await store.close();
    assert.equal(notes.length, 2);
    assert.deepStrictEqual(await listDataFiles(dir), [1, 2, 3, 4].map((i) => dataFileName(i)));
    assert.ok(sameState(await verifyChain(dir), after));
    assert.equal(after.seq, 11);
  });
});

Deno.test({
  name: "RotatingStore cuts uncommitted data before chaining a store whose commit log predates the chain",
  fn: async () => {
    await withDir(async (dir) => {
      const data = lines(0, 3);
      const committedBytes = offsetAfterLines(data, 2);
      await Deno.writeFile(join(dir, dataFileName(1)), data);
      await Deno.writeTextFile(
        join(dir, COMMIT_LOG_NAME),
        JSON.stringify({ file: 1, offset: committedBytes, streams: { s: 1 } }) + "\n",
      );
      const store = await RotatingStore.open({ dir, rotateEntries: 10 });
      await store.chained();
      const chain = store.chain;
      await store.close();
      assert.equal((await Deno.readFile(join(dir, dataFileName(1)))).length, committedBytes);
      assert.equal(chain.seq, 2);
      assert.ok(sameState(await verifyChain(dir), chain));
    });
  },
});

Deno.test("RotatingStore.open() continues the chain from the stored data when acknowledged data was lost", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 10, fsync: { kind: "off" } });
    await store.append(lines(0, 5), 5);
    await store.close();
    // --fsync off: the commit record survived a power loss, the last two lines of the data did not.
    await keepLines(join(dir, dataFileName(1)), 3);
    const notes: string[] = [];
    store = await RotatingStore.open({ dir, rotateEntries: 10, log: (m) => notes.push(m) });
    const stored = chainLines(genesisState(), await allLines(dir)).state;
    assert.equal(stored.seq, 3);
    assert.ok(sameState(store.chain, stored));
    assert.deepStrictEqual(notes, [
      "recovery: the data ends at entry 3, the commit log's chain at 5: data acknowledged without fsync was lost; " +
      "the chain continues from what is stored",
    ]);
    await store.append(lines(5, 2), 2);
    await store.chained();
    const after = store.chain;
    await store.close();
    assert.equal(after.seq, 5);
    assert.ok(sameState(await verifyChain(dir), after));
  });
});

// --- The chainer behind the writer (store_chainer.ts): recovery, the worker, the commit log ---

// Appended with the tests below that gzip files as the archiver does.
import { gzipSync } from "node:zlib";

/** Replaces `name` in `dir` by its gzip-compressed form `name.gz`. */
async function gzipInPlace(dir: string, name: string): Promise<void> {
  await Deno.writeFile(join(dir, name + ".gz"), gzipSync(await Deno.readFile(join(dir, name))), { mode: 0o600 });
  await Deno.remove(join(dir, name));
}

Deno.test("RotatingStore.open() rebuilds the chain files of the last two files after a crash with the chainer behind", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 3 });
    for (let i = 0; i < 10; i += 2) await store.append(lines(i, 2), 2);
    await store.close();
    // Files 1-3 hold 3 entries, file 4 one. The chainer was a file behind at the crash: it had written only the
    // header of file 3's chain file and had not started file 4's.
    assert.deepStrictEqual(await listDataFiles(dir), [1, 2, 3, 4].map((i) => dataFileName(i)));
    const path3 = join(dir, chainFileName(3));
    const path4 = join(dir, chainFileName(4));
    const intact3 = await Deno.readTextFile(path3);
    const intact4 = await Deno.readTextFile(path4);
    const intact12 = [
      await Deno.readTextFile(join(dir, chainFileName(1))),
      await Deno.readTextFile(join(dir, chainFileName(2))),
    ];
    await keepLines(path3, 1);
    assert.equal(parseChainFile(await Deno.readTextFile(path3), "c").records.length, 0);
    await Deno.remove(path4);
    const notes: string[] = [];
    store = await RotatingStore.open({ dir, rotateEntries: 3, log: (m) => notes.push(m) });
    const all = chainLines(genesisState(), await allLines(dir)).state;
    assert.equal(all.seq, 10);
    assert.ok(sameState(store.chain, all));
    assert.deepStrictEqual(notes, []);
    assert.equal(await Deno.readTextFile(path3), intact3);
    assert.equal(await Deno.readTextFile(path4), intact4);
    assert.equal((await Deno.stat(path4)).mode! & 0o777, 0o600);
    assert.deepStrictEqual(
      [await Deno.readTextFile(join(dir, chainFileName(1))), await Deno.readTextFile(join(dir, chainFileName(2)))],
      intact12,
    );
    assert.ok(sameState(await verifyChain(dir), all));
    // Writing goes on in file 5, its header where file 4 ended.
    await store.append(lines(10, 4), 4);
    await store.chained();
    const after = store.chain;
    await store.close();
    assert.deepStrictEqual(await listDataFiles(dir), [1, 2, 3, 4, 5, 6].map((i) => dataFileName(i)));
    assert.equal(after.seq, 14);
    assert.ok(sameState(await verifyChain(dir), after));
    assert.ok(sameState(chainLines(genesisState(), await allLines(dir)).state, after));
    const header5 = parseChainFile(await Deno.readTextFile(join(dir, chainFileName(5))), "c").prev;
    assert.ok(sameState(header5, all));
  });
});

/** Appends 50 batches of 1-5 entries, some at once (one group), some a turn apart; returns the count. */
async function appendMany(store: RotatingStore): Promise<number> {
  const pending: Promise<void>[] = [];
  let id = 0;
  for (let i = 0; i < 50; i++) {
    const n = 1 + (i * 7) % 5;
    pending.push(store.append(lines(id, n), n, { stream: `s${i % 3}`, seq: i }));
    id += n;
    if (i % 4 === 3) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await Promise.all(pending);
  return id;
}

/** Name -> text of every chain file of `dir`. */
async function chainTexts(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const set of await listStoreFiles(dir)) if (set.chain) out.set(set.chain, await readStoreText(dir, set.chain));
  return out;
}

/**
 * Counts Workers made and terminated while it is installed. Deno's test sanitizers do not report a Worker left
 * running, so the tests that expect the store to stop its hashing worker count them.
 */
function trackWorkers(): { made: () => number; terminated: () => number; restore: () => void } {
  const Original = globalThis.Worker;
  let made = 0;
  let terminated = 0;
  globalThis.Worker = class extends Original {
    constructor(...args: ConstructorParameters<typeof Worker>) {
      super(...args);
      made++;
    }
    override terminate(): void {
      terminated++;
      super.terminate();
    }
  };
  return { made: () => made, terminated: () => terminated, restore: () => globalThis.Worker = Original };
}

Deno.test("RotatingStore with hashInWorker gives the same chain as inline hashing under concurrent appends", async () => {
  const inlineDir = await Deno.makeTempDir();
  const workerDir = await Deno.makeTempDir();
  const workers = trackWorkers();
  try {
    const inline = await RotatingStore.open({ dir: inlineDir, rotateEntries: 7 });
    assert.equal(workers.made(), 0, "inline hashing starts no worker");
    const worker = await RotatingStore.open({ dir: workerDir, rotateEntries: 7, hashInWorker: true });
    assert.equal(workers.made(), 1, "hashInWorker starts one worker");
    const [n, m] = await Promise.all([appendMany(inline), appendMany(worker)]);
    assert.equal(n, m);
    await Promise.all([inline.chained(), worker.chained()]);
    const [inlineChain, workerChain] = [inline.chain, worker.chain];
    assert.equal(workers.terminated(), 0);
    await Promise.all([inline.close(), worker.close()]);
    assert.equal(workers.terminated(), 1, "close() stops the hashing worker");
    assert.equal(workerChain.seq, n);
    assert.ok(sameState(workerChain, inlineChain));
    assert.deepStrictEqual(await allLines(workerDir), await allLines(inlineDir));
    const texts = await chainTexts(workerDir);
    assert.ok(texts.size >= Math.ceil(n / 7), `${texts.size} chain files for ${n} entries`);
    assert.deepStrictEqual(texts, await chainTexts(inlineDir));
    assert.ok(sameState(await verifyChain(workerDir), workerChain));
    const final = replayCommitLog(await Deno.readTextFile(join(workerDir, COMMIT_LOG_NAME))).state;
    assert.ok(final.chain && sameState(final.chain, workerChain));
    // Restarted in worker mode, it goes on from there.
    const again = await RotatingStore.open({ dir: workerDir, rotateEntries: 7, hashInWorker: true });
    assert.ok(sameState(again.chain, workerChain));
    await again.append(lines(n, 3), 3);
    await again.chained();
    const after = again.chain;
    await again.close();
    assert.deepStrictEqual([workers.made(), workers.terminated()], [2, 2]);
    assert.equal(after.seq, n + 3);
    assert.ok(sameState(await verifyChain(workerDir), after));
  } finally {
    workers.restore();
    await Deno.remove(inlineDir, { recursive: true });
    await Deno.remove(workerDir, { recursive: true });
  }
});

Deno.test("RotatingStore: commit records never put the chain ahead of the data; the one written at close has it all", async () => {
  await withDir(async (dir) => {
    const store = await RotatingStore.open({ dir, rotateEntries: 6, hashInWorker: true });
    const n = await appendMany(store);
    // Read while the chainer may still be behind.
    const during = await Deno.readTextFile(join(dir, COMMIT_LOG_NAME));
    await store.chained();
    const chain = store.chain;
    await store.close();
    assert.equal(chain.seq, n);
    const text = await Deno.readTextFile(join(dir, COMMIT_LOG_NAME));
    assert.ok(text.startsWith(during));
    // Entries stored up to each record's position: the chain it names may lag, never lead.
    const files = new Map<number, Uint8Array>();
    for (const set of await listStoreFiles(dir)) files.set(set.index, await readStoreFile(dir, set.data!));
    const entriesUpTo = (file: number, offset: number) => {
      let count = 0;
      for (const [index, data] of files) {
        const part = index < file ? data : index === file ? data.subarray(0, offset) : new Uint8Array(0);
        for (const b of part) if (b === 0x0a) count++;
      }
      return count;
    };
    const records = text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
    assert.ok(records.length > 2);
    let lastSeq = 0;
    for (const r of records) {
      assert.ok(r.seq <= entriesUpTo(r.file, r.offset), JSON.stringify(r));
      assert.ok(r.seq >= lastSeq, "the chain in the commit log goes back");
      lastSeq = r.seq;
    }
    const lastDuring = replayCommitLog(during).state;
    assert.ok(lastDuring.chain !== null && lastDuring.chain.seq <= n);
    // The record written by close() has the whole chain at the end of the data.
    const { state } = replayCommitLog(text);
    assert.ok(state.chain && sameState(state.chain, chain));
    assert.ok(sameState(state.chain, chainLines(genesisState(), await allLines(dir)).state));
    const lastSet = (await listStoreFiles(dir)).at(-1)!;
    assert.deepStrictEqual(state.position, { file: lastSet.index, offset: files.get(lastSet.index)!.length });
  });
});

Deno.test("RotatingStore.open() chains a data file with no chain file from the end of the previous, compressed chain file", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 3 });
    await store.append(lines(0, 7), 7);
    await store.close();
    // Files 1 and 2 were compressed (data and chain, as the archiver does); file 3's chain file was never made.
    const intact3 = await Deno.readTextFile(join(dir, chainFileName(3)));
    for (const i of [1, 2]) {
      await gzipInPlace(dir, dataFileName(i));
      await gzipInPlace(dir, chainFileName(i));
    }
    await Deno.remove(join(dir, chainFileName(3)));
    assert.deepStrictEqual(
      (await listStoreFiles(dir)).map((s) => [s.data, s.chain]),
      [
        [dataFileName(1, { gz: true }), chainFileName(1) + ".gz"],
        [dataFileName(2, { gz: true }), chainFileName(2) + ".gz"],
        [dataFileName(3), null],
      ],
    );
    const end2 = parseChainFile(await readStoreText(dir, chainFileName(2) + ".gz"), "c").records.at(-1)!;
    assert.equal(end2.seq, 6);
    store = await RotatingStore.open({ dir, rotateEntries: 3 });
    const all = chainLines(genesisState(), await allLines(dir)).state;
    assert.equal(all.seq, 7);
    assert.ok(sameState(store.chain, all));
    const rebuilt = await Deno.readTextFile(join(dir, chainFileName(3)));
    assert.equal(rebuilt, intact3);
    const prev = { seq: end2.seq, head: end2.hash };
    assert.equal(
      rebuilt,
      formatChainHeader(3, prev) + chainLines(prev, await readStoreFile(dir, dataFileName(3))).records,
    );
    await store.append(lines(7, 2), 2);
    await store.chained();
    const after = store.chain;
    await store.close();
    assert.equal(after.seq, 9);
    assert.ok(sameState(after, chainLines(genesisState(), await allLines(dir)).state));
    const header4 = parseChainFile(await Deno.readTextFile(join(dir, chainFileName(4))), "c").prev;
    assert.ok(sameState(header4, all));
  });
});

Deno.test("RotatingStore.open() takes a compressed chain file whose data is compressed as complete, leveling only what follows", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 3 });
    await store.append(lines(0, 5), 5);
    await store.close();
    await gzipInPlace(dir, dataFileName(1));
    await gzipInPlace(dir, chainFileName(1));
    // File 2's chain file lost its tail: it is leveled from its own header.
    const path2 = join(dir, chainFileName(2));
    const intact2 = await Deno.readTextFile(path2);
    await keepLines(path2, 2);
    store = await RotatingStore.open({ dir, rotateEntries: 3 });
    assert.equal(store.chain.seq, 5);
    assert.ok(sameState(store.chain, chainLines(genesisState(), await allLines(dir)).state));
    await store.close();
    assert.equal(await Deno.readTextFile(path2), intact2);
  });
});

Deno.test({
  name: "RotatingStore.open() rebuilds a lost chain file of data file 1 from genesis, not from the commit log's chain",
  fn: async () => {
    await withDir(async (dir) => {
      let store = await RotatingStore.open({ dir, rotateEntries: 10 });
      await store.append(lines(0, 3), 3);
      await store.close();
      const path = join(dir, chainFileName(1));
      const intact = await Deno.readTextFile(path);
      await Deno.remove(path);
      store = await RotatingStore.open({ dir, rotateEntries: 10 });
      const chain = store.chain;
      await store.close();
      assert.equal(chain.seq, 3);
      assert.equal(await Deno.readTextFile(path), intact);
      assert.ok(sameState(await verifyChain(dir), chain));
    });
  },
});

Deno.test("RotatingStore.open() treats a chain file killed before its header was written as missing", async () => {
  for (const leftover of ["", '{"chain":1,"file":3,"prev_s']) {
    await withDir(async (dir) => {
      let store = await RotatingStore.open({ dir, rotateEntries: 3 });
      await store.append(lines(0, 8), 8);
      await store.close();
      // SIGKILL between creating tlslog-00000003.chain and writing its header.
      await Deno.writeTextFile(join(dir, chainFileName(3)), leftover);
      store = await RotatingStore.open({ dir, rotateEntries: 3 });
      const all = chainLines(genesisState(), await allLines(dir)).state;
      assert.ok(sameState(store.chain, all), JSON.stringify(leftover));
      await store.append(lines(8, 2), 2);
      await store.chained();
      const after = store.chain;
      await store.close();
      assert.ok(sameState(await verifyChain(dir), after));
      assert.equal(after.seq, 10);
    });
  }
});
