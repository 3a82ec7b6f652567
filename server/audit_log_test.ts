import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  AUDIT_LOG_NAME,
  type AuditDamage,
  AuditError,
  AuditLog,
  AuditLogCorruptError,
  verifyAuditText,
} from "./audit_log.ts";

const T0 = Date.parse("2026-11-22T09:00:00.000Z");
const ZERO_HEX = "0".repeat(64);
const enc = new TextEncoder();

/** A clock that starts at T0 and moves one second per reading. */
function clock(start = T0): () => number {
  let t = start - 1000;
  return () => (t += 1000);
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-audit-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** head_n computed independently of the module: SHA-256 over head_{n-1} and the line. */
function chainHeads(lines: readonly string[]): string[] {
  const heads = [ZERO_HEX];
  for (const line of lines) {
    heads.push(createHash("sha256").update(Buffer.from(heads.at(-1)!, "hex")).update(line).digest("hex"));
  }
  return heads;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/** The complete lines of the log file. */
async function readLines(dir: string): Promise<string[]> {
  const text = await Deno.readTextFile(join(dir, AUDIT_LOG_NAME));
  assert.ok(text === "" || text.endsWith("\n"));
  return text.split("\n").slice(0, -1);
}

/** Writes `n` "tick" events {i} through AuditLog and returns the file's lines. */
async function writeTicks(dir: string, n: number): Promise<string[]> {
  const log = await AuditLog.open(dir, { now: clock(), log: () => {} });
  for (let i = 1; i <= n; i++) log.record("tick", { i });
  await log.close();
  return await readLines(dir);
}

const text = (lines: readonly string[]) => lines.map((l) => l + "\n").join("");
const kinds = (damage: readonly AuditDamage[]) => damage.map((d) => [d.line, d.kind]);

Deno.test("AuditLog writes a chained log that verifies, and a reopened log continues seq and chain", async () => {
  await withDir(async (dir) => {
    let log = await AuditLog.open(dir, { now: clock() });
    assert.deepStrictEqual(log.head, { size: 0, hash: new Uint8Array(32) });
    log.record("start", { version: "1.2.3", "7": "integer-like key", skipped: undefined });
    for (let i = 2; i <= 5; i++) log.record("tick", { i, peer: { ip: "10.0.0.1", port: 4433 } });
    const firstHead = log.head;
    await log.close();

    let lines = await readLines(dir);
    assert.equal(lines.length, 5);
    let heads = chainHeads(lines);
    assert.equal(
      lines[0],
      `{"seq":1,"time":"2026-11-22T09:00:00.000Z","event":"start","7":"integer-like key","version":"1.2.3",` +
        `"prev":"${ZERO_HEX}"}`,
    );
    lines.forEach((line, n) => {
      const r = JSON.parse(line);
      assert.equal(r.seq, n + 1);
      assert.equal(r.time, new Date(T0 + n * 1000).toISOString());
      assert.equal(r.prev, heads[n]);
      assert.ok(line.endsWith(`,"prev":"${heads[n]}"}`), "prev is the last key");
    });
    assert.equal(hex(firstHead.hash), heads[5]);
    assert.equal(firstHead.size, enc.encode(text(lines)).length);
    const verified = verifyAuditText(await Deno.readTextFile(join(dir, AUDIT_LOG_NAME)));
    assert.deepStrictEqual(verified, { head: firstHead, damage: [], tornTail: false });

    log = await AuditLog.open(dir, { now: clock(T0 + 60_000) });
    assert.deepStrictEqual(log.head, firstHead);
    log.record("stop");
    log.record("start", { again: true });
    const secondHead = log.head;
    await log.close();

    lines = await readLines(dir);
    heads = chainHeads(lines);
    assert.deepStrictEqual(lines.map((l) => JSON.parse(l).seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(
      lines[5],
      `{"seq":6,"time":"2026-11-22T09:01:00.000Z","event":"stop","prev":"${hex(firstHead.hash)}"}`,
    );
    assert.equal(JSON.parse(lines[6]!).prev, heads[6]);
    assert.equal(hex(secondHead.hash), heads[7]);
    assert.deepStrictEqual(verifyAuditText(text(lines)), { head: secondHead, damage: [], tornTail: false });
  });
});

Deno.test("AuditLog creates its file with mode 0600", { ignore: Deno.build.os === "windows" }, async () => {
  await withDir(async (dir) => {
    await writeTicks(dir, 1);
    assert.equal((await Deno.stat(join(dir, AUDIT_LOG_NAME))).mode! & 0o777, 0o600);
  });
});

Deno.test("verifyAuditText() of an empty log: zero head, nothing wrong", () => {
  assert.deepStrictEqual(verifyAuditText(""), {
    head: { size: 0, hash: new Uint8Array(32) },
    damage: [],
    tornTail: false,
  });
});

Deno.test("verifyAuditText() names each kind of damage at the right line", async () => {
  await withDir(async (dir) => {
    const good = await writeTicks(dir, 20);
    const check = (lines: string[], expected: [number, AuditDamage["kind"]][]) => {
      const result = verifyAuditText(text(lines));
      assert.deepStrictEqual(kinds(result.damage), expected, JSON.stringify(result.damage));
      for (const d of result.damage) assert.match(d.message, new RegExp(`line ${d.line}\\b`));
      assert.equal(result.tornTail, false);
      // The head is over the lines as they are, so it no longer matches the intact log's.
      assert.notEqual(hex(result.head.hash), chainHeads(good)[20]);
    };

    // A field value changed (prev untouched): line 7 no longer hashes to line 8's prev.
    const edited = [...good];
    edited[6] = edited[6]!.replace('"i":7', '"i":70');
    assert.notEqual(edited[6], good[6]);
    check(edited, [[7, "edited"]]);

    // The first line edited.
    const editedFirst = [...good];
    editedFirst[0] = editedFirst[0]!.replace('"event":"tick"', '"event":"tock"');
    check(editedFirst, [[1, "edited"]]);

    // A line's seq changed.
    const renumbered = [...good];
    renumbered[9] = renumbered[9]!.replace('"seq":10,', '"seq":99,');
    check(renumbered, [[10, "edited"]]);

    // A copy of line 3 inserted as line 11.
    check([...good.slice(0, 10), good[2]!, ...good.slice(10)], [[11, "inserted"]]);
    // A line duplicated next to itself.
    check([...good.slice(0, 5), good[4]!, ...good.slice(5)], [[6, "inserted"]]);
    // A copy of an earlier line appended at the end.
    check([...good, good[3]!], [[21, "inserted"]]);

    // Line 10 deleted: the gap shows at the line that is now line 10.
    check([...good.slice(0, 9), ...good.slice(10)], [[10, "deleted"]]);
    // The first line deleted; three lines deleted.
    check(good.slice(1), [[1, "deleted"]]);
    const three = verifyAuditText(text([...good.slice(0, 4), ...good.slice(7)]));
    assert.deepStrictEqual(kinds(three.damage), [[5, "deleted"]]);
    assert.match(three.damage[0]!.message, /^3 lines deleted before line 5 \(seq 5\.\.7\)/);

    // Neighbours swapped.
    check([...good.slice(0, 4), good[5]!, good[4]!, ...good.slice(6)], [[5, "reordered"]]);
    check([...good.slice(0, 18), good[19]!, good[18]!], [[19, "reordered"]]);
    check([good[1]!, good[0]!, ...good.slice(2)], [[1, "reordered"]]);
    // Line 4 moved to after line 12: one line out of order, nothing deleted or inserted.
    check([...good.slice(0, 3), ...good.slice(4, 12), good[3]!, ...good.slice(12)], [[12, "reordered"]]);

    // Garbage in place of a line, or in between lines.
    const garbage = [...good];
    garbage[7] = "this is not JSON";
    check(garbage, [[8, "malformed"]]);
    check([...good.slice(0, 7), '{"seq":8}', ...good.slice(7)], [[8, "malformed"]]);
    check([...good.slice(0, 7), "", ...good.slice(7)], [[8, "malformed"]]);

    // A line's prev changed as well as its content: it links to neither neighbour.
    const relinked = [...good];
    relinked[11] = relinked[11]!.replace('"i":12', '"i":13').replace(
      /"prev":"[0-9a-f]{64}"/,
      `"prev":"${"ab".repeat(32)}"`,
    );
    check(relinked, [[12, "broken_link"]]);
  });
});

Deno.test("verifyAuditText() resynchronises after damage and reports independent damage further on", async () => {
  await withDir(async (dir) => {
    const good = await writeTicks(dir, 40);
    const lines = [...good];
    lines[2] = lines[2]!.replace('"i":3', '"i":33'); // line 3 edited
    lines.splice(20, 1); // old line 21 deleted: old line 22 is now line 21
    [lines[29], lines[30]] = [lines[30]!, lines[29]!]; // now lines 30 and 31 swapped
    lines.splice(35, 0, "garbage"); // line 36 malformed
    const result = verifyAuditText(text(lines));
    assert.deepStrictEqual(kinds(result.damage), [[3, "edited"], [21, "deleted"], [30, "reordered"], [
      36,
      "malformed",
    ]]);
  });
});

Deno.test("verifyAuditText() ignores a torn last line and reports it", async () => {
  await withDir(async (dir) => {
    const good = await writeTicks(dir, 3);
    const intact = verifyAuditText(text(good));
    assert.deepStrictEqual(verifyAuditText(text(good) + '{"seq":4,"ti'), { ...intact, tornTail: true });
    // Complete JSON without its newline is torn too: the write stopped just before the end.
    assert.deepStrictEqual(
      verifyAuditText(text(good.slice(0, 2)) + good[2]).head,
      verifyAuditText(text(good.slice(0, 2))).head,
    );
  });
});

Deno.test("AuditLog.open() cuts a torn last line, logs a notice, and the chain continues", async () => {
  await withDir(async (dir) => {
    const path = join(dir, AUDIT_LOG_NAME);
    const good = await writeTicks(dir, 3);
    const size = (await Deno.stat(path)).size;
    await Deno.writeTextFile(path, '{"seq":4,"time":"2026-11-22T09:00:03.000Z","event":"ti', { append: true });
    const notes: string[] = [];
    const log = await AuditLog.open(dir, { now: clock(), log: (m) => notes.push(m) });
    assert.equal(notes.length, 1);
    assert.match(notes[0]!, /torn last line/);
    assert.equal((await Deno.stat(path)).size, size);
    log.record("after-tear");
    await log.close();
    const lines = await readLines(dir);
    assert.deepStrictEqual(lines.slice(0, 3), good);
    assert.equal(JSON.parse(lines[3]!).seq, 4);
    assert.deepStrictEqual(verifyAuditText(text(lines)).damage, []);
  });
});

Deno.test("AuditLog.open() throws AuditLogCorruptError for a damaged middle line and leaves the file alone", async () => {
  await withDir(async (dir) => {
    const path = join(dir, AUDIT_LOG_NAME);
    const good = await writeTicks(dir, 5);
    const lines = [...good];
    lines[1] = lines[1]!.replace('"i":2', '"i":3');
    const damaged = text(lines) + '{"seq":6,"ti'; // a torn tail too: not cut when the log is damaged
    await Deno.writeTextFile(path, damaged);
    await assert.rejects(() => AuditLog.open(dir, { log: () => {} }), (err: unknown) => {
      assert.ok(err instanceof AuditLogCorruptError);
      assert.equal(err.name, "AuditLogCorruptError");
      assert.match(err.message, /line 2 \(edited\)/);
      assert.match(err.message, /tlslog verify/);
      assert.match(err.message, /move the file aside/);
      return true;
    });
    assert.equal(await Deno.readTextFile(path), damaged);

    // Invalid UTF-8 in a complete line is damage too.
    const bytes = enc.encode(text(good));
    bytes[enc.encode(text(good.slice(0, 3))).length + 5] = 0xff;
    await Deno.writeFile(path, bytes);
    await assert.rejects(() => AuditLog.open(dir), { name: "AuditLogCorruptError", message: /line 4 .*UTF-8/ });
  });
});

Deno.test("AuditLog keeps records made before and after a flush in order", async () => {
  await withDir(async (dir) => {
    const log = await AuditLog.open(dir, { now: clock() });
    log.record("a");
    log.record("b");
    await log.flush();
    assert.deepStrictEqual((await readLines(dir)).map((l) => JSON.parse(l).event), ["a", "b"]);
    const flushedSize = (await Deno.stat(join(dir, AUDIT_LOG_NAME))).size;
    assert.equal(log.head.size, flushedSize);
    log.record("c");
    // The head counts a record at once, before it is written.
    assert.ok(log.head.size > flushedSize);
    await log.flush(true);
    log.record("d");
    await log.close();
    const lines = await readLines(dir);
    assert.deepStrictEqual(lines.map((l) => JSON.parse(l).event), ["a", "b", "c", "d"]);
    assert.deepStrictEqual(verifyAuditText(text(lines)).damage, []);
  });
});

Deno.test("AuditLog writes records made while flushes are running in order, never interleaved", async () => {
  await withDir(async (dir) => {
    const log = await AuditLog.open(dir, { now: clock() });
    const flushes: Promise<void>[] = [];
    const N = 300;
    for (let i = 1; i <= N; i++) {
      log.record("tick", { i, pad: "x".repeat(i % 50) });
      if (i % 7 === 0) {
        const expected = i;
        flushes.push(
          log.flush(i % 21 === 0).then(async () => {
            // Everything recorded before this flush was called is in the file by now.
            // (The writer may be in the middle of a later batch: count complete lines only.)
            const complete = (await Deno.readTextFile(join(dir, AUDIT_LOG_NAME))).split("\n").length - 1;
            assert.ok(complete >= expected, `${complete} lines after flush of ${expected}`);
          }),
        );
      }
      if (i % 13 === 0) await new Promise((r) => setTimeout(r, 0));
      else if (i % 5 === 0) await Promise.resolve();
    }
    const head = log.head;
    await Promise.all(flushes);
    await log.close();
    const lines = await readLines(dir);
    assert.deepStrictEqual(lines.map((l) => JSON.parse(l).i), Array.from({ length: N }, (_, k) => k + 1));
    assert.deepStrictEqual(verifyAuditText(text(lines)), { head, damage: [], tornTail: false });
  });
});

Deno.test("AuditLog.record() refuses reserved field names, unserialisable values, and records after close", async () => {
  await withDir(async (dir) => {
    const log = await AuditLog.open(dir, { now: clock() });
    for (const key of ["seq", "time", "event", "prev"]) {
      assert.throws(() => log.record("x", { ok: 1, [key]: "forged" }), {
        name: "AuditError",
        message: new RegExp(`"${key}" is reserved`),
      });
    }
    assert.throws(() => log.record("x", { n: 1n }), AuditError);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.throws(() => log.record("x", { cyclic }), AuditError);
    // Nothing refused advanced the chain.
    assert.deepStrictEqual(log.head, { size: 0, hash: new Uint8Array(32) });
    log.record("ok");
    await log.close();
    await log.close();
    assert.throws(() => log.record("late"), { name: "AuditError", message: /closed/ });
    const lines = await readLines(dir);
    assert.equal(lines.length, 1);
    assert.equal(JSON.parse(lines[0]!).seq, 1);
  });
});
