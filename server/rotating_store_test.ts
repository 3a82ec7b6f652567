import assert from "node:assert/strict";
import { join } from "node:path";
import { dataFileName, listDataFiles, offsetAfterLines, RotatingStore, StoreError } from "./rotating_store.ts";

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
