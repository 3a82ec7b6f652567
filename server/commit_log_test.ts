import assert from "node:assert/strict";
import { join } from "node:path";
import { COMMIT_LOG_NAME, CommitLog, CommitLogCorruptError, type CommitState, replayCommitLog } from "./commit_log.ts";
import { dataFileName, listDataFiles, RotatingStore } from "./rotating_store.ts";
import { genesisState } from "./entry_chain.ts";

const enc = new TextEncoder();
const lines = (from: number, n: number) =>
  enc.encode(Array.from({ length: n }, (_, i) => JSON.stringify({ id: from + i }) + "\n").join(""));
const record = (file: number, offset: number, streams: Record<string, number>, chained = false) =>
  JSON.stringify({ file, offset, streams, ...(chained ? { seq: 0, head: "0".repeat(64) } : {}) }) + "\n";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-commit-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Stored ids, file by file. */
async function storedIds(dir: string): Promise<number[][]> {
  const out: number[][] = [];
  for (const name of await listDataFiles(dir)) {
    const text = await Deno.readTextFile(join(dir, name));
    out.push(text.split("\n").filter(Boolean).map((l) => JSON.parse(l).id));
  }
  return out;
}

Deno.test("replayCommitLog() of empty text: nothing committed", () => {
  assert.deepStrictEqual(replayCommitLog(""), {
    state: { position: null, streams: new Map(), chain: null },
    validBytes: 0,
  });
});

Deno.test("replayCommitLog() takes the last record's position and folds each stream to its highest seq", () => {
  const text = record(1, 10, { a: 1, b: 5 }) + record(1, 20, { a: 3 }) + record(2, 7, { b: 4, c: 1 });
  const expected: CommitState = {
    position: { file: 2, offset: 7 },
    streams: new Map([["a", 3], ["b", 5], ["c", 1]]),
    chain: null,
  };
  assert.deepStrictEqual(replayCommitLog(text), { state: expected, validBytes: text.length });
});

Deno.test("replayCommitLog() ignores a torn last line, even one that parses, and counts bytes, not characters", () => {
  const good = record(1, 10, { "ström-ü": 2 }) + record(1, 30, { b: 1 });
  const expected = {
    state: { position: { file: 1, offset: 30 }, streams: new Map([["ström-ü", 2], ["b", 1]]), chain: null },
    validBytes: enc.encode(good).length,
  };
  assert.deepStrictEqual(replayCommitLog(good + '{"file":1,"offset":4'), expected);
  // Complete JSON without its newline: the write stopped just before the end of the record.
  assert.deepStrictEqual(replayCommitLog(good + record(1, 40, { b: 2 }).trimEnd()), expected);
  // A terminated last line that is not a record: its tail was lost, the newline was not.
  assert.deepStrictEqual(replayCommitLog(good + '{"file":1,"off\n'), expected);
});

Deno.test("replayCommitLog() throws CommitLogCorruptError naming a damaged line that is not the last", () => {
  const good = record(1, 10, { a: 1 });
  assert.throws(
    () => replayCommitLog(good + '{"file":1,"offset":20}\n' + good),
    new CommitLogCorruptError(`${COMMIT_LOG_NAME} line 2 is damaged: incomplete record`),
  );
  assert.throws(
    () => replayCommitLog("not json\n" + good + good),
    { name: "CommitLogCorruptError", message: new RegExp(`^${COMMIT_LOG_NAME} line 1 is damaged: `) },
  );
  assert.throws(
    () => replayCommitLog(good + "\n" + good),
    { name: "CommitLogCorruptError", message: new RegExp(`^${COMMIT_LOG_NAME} line 2 is damaged: `) },
  );
  // A damaged line followed by a torn one: two lines lost is damage, not a torn write.
  assert.throws(
    () => replayCommitLog(good + "BAD\n" + '{"file":1,"of'),
    { name: "CommitLogCorruptError", message: new RegExp(`^${COMMIT_LOG_NAME} line 2 is damaged: `) },
  );
});

Deno.test("CommitLog.open() cuts a torn last line so that the next record starts a line of its own", async () => {
  await withDir(async (dir) => {
    const path = join(dir, COMMIT_LOG_NAME);
    // The torn record is longer than the next one, so writing over it would leave a tail.
    await Deno.writeTextFile(path, record(1, 10, { a: 1 }) + record(1, 99, { a: 2, b: 1, c: 1 }).slice(0, -2));
    const { log, state, existed } = await CommitLog.open(dir);
    assert.deepStrictEqual({ state, existed }, {
      state: { position: { file: 1, offset: 10 }, streams: new Map([["a", 1]]), chain: null },
      existed: true,
    });
    await log.commit({ file: 1, offset: 20 }, new Map([["a", 2]]), true, genesisState());
    log.close();
    assert.equal(await Deno.readTextFile(path), record(1, 10, { a: 1 }) + record(1, 20, { a: 2 }, true));
  });
});

Deno.test("CommitLog.commit() compacts the log past 4 MiB into one record that keeps every stream", async () => {
  await withDir(async (dir) => {
    const path = join(dir, COMMIT_LOG_NAME);
    const { log } = await CommitLog.open(dir);
    // 1,000 streams with long names, 100 per record: ~5 KB records, past 4 MiB after ~900 commits.
    const names = Array.from({ length: 1000 }, (_, i) => `stream-${String(i).padStart(30, "0")}`);
    const expected = new Map<string, number>();
    let sizeBefore = 0;
    let sizeAfter = 0;
    let commits = 0;
    for (; commits < 1200 && sizeAfter >= sizeBefore; commits++) {
      const streams = new Map<string, number>();
      for (let j = 0; j < 100; j++) {
        const name = names[(commits * 100 + j) % names.length]!;
        streams.set(name, commits + 1);
        expected.set(name, commits + 1);
      }
      sizeBefore = sizeAfter;
      await log.commit({ file: 1, offset: commits }, streams, false, genesisState());
      sizeAfter = (await Deno.stat(path)).size;
    }
    await log.commit({ file: 2, offset: 5 }, new Map([["late", 1]]), true, {
      seq: 7,
      head: new Uint8Array(32).fill(7),
    });
    expected.set("late", 1);
    log.close();

    assert.ok(sizeBefore > 4 << 20, `the log shrank at ${sizeBefore} bytes after ${commits} commits`);
    const text = await Deno.readTextFile(path);
    assert.equal(text.split("\n").length, 3, "one compacted record, then one more");
    assert.deepStrictEqual(replayCommitLog(text), {
      state: {
        position: { file: 2, offset: 5 },
        streams: expected,
        chain: { seq: 7, head: new Uint8Array(32).fill(7) },
      },
      validBytes: enc.encode(text).length,
    });
    assert.deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), [COMMIT_LOG_NAME]);
  });
});

Deno.test("RotatingStore.open() after a crash cuts uncommitted bytes and files, and recovers committed stream progress", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 4 });
    await store.append(lines(0, 3), 3, { stream: "a", seq: 1 });
    await store.append(lines(3, 3), 3, { stream: "b", seq: 1 });
    await store.append(lines(6, 2), 2, { stream: "a", seq: 2 });
    await store.close();
    assert.deepStrictEqual(await storedIds(dir), [[0, 1, 2, 3], [4, 5, 6, 7]]);

    // What a SIGKILL during the next group leaves: its bytes written, a new file begun,
    // the commit record half written.
    const extra = '{"id":100}\n{"id":10';
    await Deno.writeTextFile(join(dir, dataFileName(2)), extra, { append: true });
    await Deno.writeTextFile(join(dir, dataFileName(3)), '{"id":200}\n');
    await Deno.writeTextFile(join(dir, COMMIT_LOG_NAME), '{"file":3,"offset":11,"streams":{"a":', { append: true });

    const logged: string[] = [];
    store = await RotatingStore.open({ dir, rotateEntries: 4, log: (m) => logged.push(m) });
    assert.deepStrictEqual(
      { streams: store.recoveredStreams, files: await listDataFiles(dir), ids: await storedIds(dir) },
      {
        streams: new Map([["a", 2], ["b", 1]]),
        files: [dataFileName(1), dataFileName(2)],
        ids: [[0, 1, 2, 3], [4, 5, 6, 7]],
      },
    );
    assert.deepStrictEqual(logged, [
      `recovery: cut ${extra.length} uncommitted bytes from the end of ${dataFileName(2)}; senders resend them`,
      `recovery: removed ${dataFileName(3)} (11 bytes written after the last commit; senders resend it)`,
    ]);

    // Writing goes on in a new file, and what it commits survives the next start.
    await store.append(lines(8, 1), 1, { stream: "a", seq: 3 });
    await store.close();
    store = await RotatingStore.open({ dir, rotateEntries: 4 });
    await store.close();
    assert.deepStrictEqual(
      { streams: store.recoveredStreams, ids: await storedIds(dir) },
      { streams: new Map([["a", 3], ["b", 1]]), ids: [[0, 1, 2, 3], [4, 5, 6, 7], [8]] },
    );
  });
});

Deno.test("RotatingStore.open() removes a data file written before the first commit", async () => {
  await withDir(async (dir) => {
    let store = await RotatingStore.open({ dir, rotateEntries: 4 });
    await store.close();
    await Deno.writeFile(join(dir, dataFileName(1)), lines(0, 2));
    store = await RotatingStore.open({ dir, rotateEntries: 4 });
    await store.close();
    assert.deepStrictEqual({ streams: store.recoveredStreams, files: await listDataFiles(dir) }, {
      streams: new Map(),
      files: [],
    });
  });
});

Deno.test("RotatingStore.open() refuses a commit log damaged before its last line", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, COMMIT_LOG_NAME), "garbage\n" + record(1, 0, {}) + record(1, 0, {}));
    await assert.rejects(RotatingStore.open({ dir, rotateEntries: 4 }), CommitLogCorruptError);
  });
});
