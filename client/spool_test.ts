import assert from "node:assert/strict";
import { Spool } from "./spool.ts";

const batch = (seq: number, count = 2, bytes = 10) => ({
  seq,
  count,
  rawBytes: 0,
  body: new Uint8Array(bytes).fill(seq),
  createdMs: 1000 + seq,
  source: "app.jsonl",
  lineNos: Array.from({ length: count }, (_, i) => seq * 10 + i),
});

async function withSpoolDir(fn: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Spool keeps batches, positions, stream id and sequence numbers across reopening", () =>
  withSpoolDir((dir) => {
    const a = Spool.open(dir);
    const stream = a.streamId;
    a.put([batch(a.takeSeq()), batch(a.takeSeq())], { "input:/x": '{"offset":42,"line":5}' });
    a.close();
    const b = Spool.open(dir);
    assert.equal(b.streamId, stream);
    assert.equal(b.takeSeq(), 3);
    assert.equal(b.getMeta("input:/x"), '{"offset":42,"line":5}');
    assert.deepStrictEqual(b.load(0, 10), [batch(1), batch(2)]);
    assert.deepStrictEqual(b.stats, { batches: 2, entries: 4, bytes: 20, oldestMs: 1001 });
    // Batches hold log entries: the database and its WAL are owner-only (the WAL goes at close).
    for (const name of ["spool.db", "spool.db-wal"]) {
      assert.equal(Deno.statSync(`${dir}/${name}`).mode! & 0o777, 0o600, name);
    }
    b.close();
  }));

Deno.test("Spool.remove() and seqsUpTo() drop acknowledged batches and keep the stats right", () =>
  withSpoolDir((dir) => {
    const s = Spool.open(dir);
    s.put([1, 2, 3].map((seq) => batch(s.takeSeq(), seq)));
    assert.deepStrictEqual(s.seqsUpTo(2), [1, 2]);
    assert.equal(s.remove([1, 2, 99]), 3);
    assert.deepStrictEqual(s.stats, { batches: 1, entries: 3, bytes: 10, oldestMs: 1003 });
    assert.deepStrictEqual(s.load(0, 10).map((b) => b.seq), [3]);
    s.remove([3]);
    assert.deepStrictEqual(s.stats, { batches: 0, entries: 0, bytes: 0, oldestMs: null });
    s.close();
  }));

Deno.test("Spool.put() stores batches and position together or not at all", () =>
  withSpoolDir((dir) => {
    const s = Spool.open(dir);
    s.put([batch(s.takeSeq())], { pos: "1" });
    // A duplicate seq violates the primary key: the whole transaction is rolled back.
    assert.throws(() => s.put([batch(2), batch(1)], { pos: "2" }));
    assert.equal(s.getMeta("pos"), "1");
    assert.deepStrictEqual(s.load(0, 10).map((b) => b.seq), [1]);
    s.close();
  }));

Deno.test("Spool.open() names the directory when it cannot be used", async () => {
  const file = await Deno.makeTempFile();
  try {
    assert.throws(() => Spool.open(file), (e: unknown) => e instanceof Error && e.message.includes(file));
  } finally {
    await Deno.remove(file);
  }
});
