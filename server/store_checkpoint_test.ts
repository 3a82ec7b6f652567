import assert from "node:assert/strict";
import { join } from "node:path";
import type { ChainState } from "./entry_chain.ts";
import { toHex } from "./entry_chain.ts";
import {
  createSigner,
  formatCheckpoint,
  newSigningKeyPem,
  NoteError,
  NoteSignatureError,
  type NoteSigner,
  parseVerifierKey,
} from "./signed_note.ts";
import {
  CHECKPOINT_LOG_NAME,
  Checkpointer,
  type CheckpointerOptions,
  checkpointText,
  LATEST_CHECKPOINT_NAME,
  parseCheckpointLog,
  readCheckpoint,
  type StoreCheckpoint,
} from "./store_checkpoint.ts";

const T0 = Date.parse("2026-11-22T09:00:00.000Z");
const ORIGIN = "tlslog/test";
const signer = createSigner(newSigningKeyPem(), "test");
const verifier = parseVerifierKey(signer.verifierKey);

/** A clock that starts at T0 and moves one second per reading. */
function clock(start = T0): () => number {
  let t = start - 1000;
  return () => (t += 1000);
}

const hash = (seed: number) => Uint8Array.from({ length: 32 }, (_, i) => (seed * 37 + i * 13) & 0xff);
const b64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));
const chain = (seq: number): ChainState => ({ seq, head: hash(seq) });

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-checkpoint-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function open(dir: string, extra: Partial<CheckpointerOptions> = {}): Promise<Checkpointer> {
  return Checkpointer.open({ dir, signer, origin: ORIGIN, sync: true, now: clock(), ...extra });
}

/** The checkpoints of a log file, verified. */
async function readLog(path: string, by = verifier): Promise<StoreCheckpoint[]> {
  const parsed = parseCheckpointLog(await Deno.readTextFile(path));
  assert.deepStrictEqual(parsed.malformed, []);
  assert.equal(parsed.torn, false);
  return parsed.notes.map((n) => readCheckpoint(n.note, by));
}

/** A checkpoint with its hashes as hex, for deepStrictEqual. */
function plain(c: StoreCheckpoint | null) {
  if (c === null) return null;
  return {
    ...c,
    hash: toHex(c.hash),
    audit: c.audit && { size: c.audit.size, hash: toHex(c.audit.hash) },
    pruned: c.pruned && { ...c.pruned, head: toHex(c.pruned.head) },
  };
}

/** A signed note of a checkpoint with these extension lines. */
function noteWith(extensions: string[], by: NoteSigner = signer): string {
  return by.sign(formatCheckpoint({ origin: ORIGIN, size: 3, hash: hash(3), extensions }));
}

Deno.test("Checkpointer.open() on an empty dir creates an empty 0600 log and has no last checkpoint", async () => {
  await withDir(async (dir) => {
    const cp = await open(dir);
    try {
      assert.equal(cp.last, null);
      assert.equal(cp.written, 0);
      assert.equal(cp.copyFailures, 0);
      const st = await Deno.stat(join(dir, CHECKPOINT_LOG_NAME));
      assert.equal(st.size, 0);
      if (Deno.build.os !== "windows") assert.equal(st.mode! & 0o777, 0o600);
    } finally {
      await cp.close();
    }
  });
});

Deno.test("Checkpointer.write() appends signed {note} lines whose fields read back", async () => {
  await withDir(async (dir) => {
    const cp = await open(dir);
    const audit = { size: 120, hash: hash(99) };
    const pruned = { seq: 40, head: hash(40), throughFile: 4 };
    const first = await cp.write(chain(60), 7, audit, pruned);
    const second = await cp.write({ seq: 0, head: new Uint8Array(32) }, 0, null);
    await cp.close();
    const text = await Deno.readTextFile(join(dir, CHECKPOINT_LOG_NAME));
    const lines = text.split("\n");
    assert.equal(lines.length, 3);
    assert.equal(lines[2], "");
    for (const line of lines.slice(0, 2)) assert.deepStrictEqual(Object.keys(JSON.parse(line)), ["note"]);
    const read = await readLog(join(dir, CHECKPOINT_LOG_NAME));
    const want1 = { origin: ORIGIN, size: 60, hash: hash(60), time: T0, file: 7, audit, pruned };
    assert.deepStrictEqual(read.map(plain), [
      plain(want1),
      // The pruned prefix is carried on.
      plain({ origin: ORIGIN, size: 0, hash: new Uint8Array(32), time: T0 + 1000, file: 0, audit: null, pruned }),
    ]);
    assert.deepStrictEqual([plain(first), plain(second)], read.map(plain));
    assert.equal(cp.written, 2);
    assert.deepStrictEqual(plain(cp.last), plain(read[1]!));
    // The note text, in the documented layout.
    const note = JSON.parse(lines[0]!).note as string;
    assert.ok(
      note.startsWith(
        `${ORIGIN}\n60\n${b64(hash(60))}\ntime 2026-11-22T09:00:00.000Z\nfile 7\naudit 120 ${b64(hash(99))}\n` +
          `pruned 40 ${b64(hash(40))} 4\n\n\u2014 test `,
      ),
      note,
    );
    assert.equal(checkpointText(want1), note.slice(0, note.indexOf("\n\n") + 1));
  });
});

Deno.test("readCheckpoint() needs the signer's key", async () => {
  await withDir(async (dir) => {
    const cp = await open(dir);
    await cp.write(chain(5), 1, null);
    await cp.close();
    const other = parseVerifierKey(createSigner(newSigningKeyPem(), "test").verifierKey);
    const { notes } = parseCheckpointLog(await Deno.readTextFile(join(dir, CHECKPOINT_LOG_NAME)));
    assert.throws(() => readCheckpoint(notes[0]!.note, other), NoteSignatureError);
    assert.equal(readCheckpoint(notes[0]!.note, verifier).size, 5);
  });
});

Deno.test("a pruned prefix given once is carried by later checkpoints, across a reopen, until replaced", async () => {
  await withDir(async (dir) => {
    const pruned = { seq: 10, head: hash(10), throughFile: 2 };
    let cp = await open(dir);
    await cp.write(chain(5), 1, null);
    await cp.write(chain(12), 3, null, pruned);
    await cp.write(chain(14), 3, null);
    await cp.close();
    cp = await open(dir, { now: clock(T0 + 60_000) });
    assert.deepStrictEqual(plain(cp.last)?.pruned, { ...pruned, head: toHex(pruned.head) });
    assert.equal(cp.last?.size, 14);
    await cp.write(chain(20), 4, null);
    const later = { seq: 18, head: hash(18), throughFile: 3 };
    await cp.write(chain(22), 5, null, later);
    await cp.write(chain(23), 5, null);
    await cp.close();
    const read = await readLog(join(dir, CHECKPOINT_LOG_NAME));
    const pr = (p: typeof pruned | null) => p && { ...p, head: toHex(p.head) };
    assert.deepStrictEqual(
      read.map((c) => [c.size, plain(c)!.pruned]),
      [[5, null], [12, pr(pruned)], [14, pr(pruned)], [20, pr(pruned)], [22, pr(later)], [23, pr(later)]],
    );
    assert.deepStrictEqual(read.map((c) => c.time), [T0, T0 + 1000, T0 + 2000, T0 + 60_000, T0 + 61_000, T0 + 62_000]);
  });
});

Deno.test("a latest checkpoint that does not verify is logged at open and its pruned prefix not carried", async () => {
  await withDir(async (dir) => {
    const otherSigner = createSigner(newSigningKeyPem(), "test");
    let cp = await open(dir, { signer: otherSigner });
    await cp.write(chain(12), 3, null, { seq: 10, head: hash(10), throughFile: 2 });
    await cp.close();
    const messages: string[] = [];
    cp = await open(dir, { log: (m) => messages.push(m) });
    assert.equal(cp.last, null);
    await cp.write(chain(13), 3, null);
    await cp.close();
    assert.equal(messages.length, 1);
    assert.match(messages[0]!, /^tlslog-checkpoints\.log line 1: the latest checkpoint does not verify/);
    const { notes } = parseCheckpointLog(await Deno.readTextFile(join(dir, CHECKPOINT_LOG_NAME)));
    assert.equal(readCheckpoint(notes[1]!.note, verifier).pruned, null);
  });
});

Deno.test("Checkpointer.write() called concurrently writes in call order and carries a pruned prefix on", async () => {
  await withDir(async (dir) => {
    const copyDir = join(dir, "copy");
    const cp = await open(dir, { copyDir });
    const pruned = { seq: 3, head: hash(3), throughFile: 1 };
    // Not awaited in between: each call must see the one before it (its pruned prefix, its place in the log).
    const sizes = [4, 9, 5, 12, 7, 20, 11, 30];
    const results = await Promise.all(
      sizes.map((size, i) => cp.write(chain(size), i + 1, null, i === 0 ? pruned : undefined)),
    );
    await cp.close();
    assert.deepStrictEqual(results.map((c) => c.size), sizes);
    for (const path of [join(dir, CHECKPOINT_LOG_NAME), join(copyDir, CHECKPOINT_LOG_NAME)]) {
      const read = await readLog(path);
      assert.deepStrictEqual(read.map((c) => [c.size, c.file]), sizes.map((s, i) => [s, i + 1]), path);
      assert.deepStrictEqual(read.map((c) => c.time), sizes.map((_, i) => T0 + i * 1000), path);
      for (const c of read) assert.equal(c.pruned && toHex(c.pruned.head), toHex(pruned.head), path);
    }
    const latest = readCheckpoint(await Deno.readTextFile(join(copyDir, LATEST_CHECKPOINT_NAME)), verifier);
    assert.equal(latest.size, 30);
    assert.equal(cp.last?.size, 30);
  });
});

Deno.test("with a copy dir, the copy log gets the same lines and `checkpoint` the latest note", async () => {
  await withDir(async (dir) => {
    const copyDir = join(dir, "mnt", "copy");
    let cp = await open(dir, { copyDir });
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(copyDir)).mode! & 0o777, 0o700);
    await cp.write(chain(1), 1, null);
    const second = await cp.write(chain(2), 1, { size: 10, hash: hash(10) });
    await cp.close();
    const main = await Deno.readTextFile(join(dir, CHECKPOINT_LOG_NAME));
    assert.equal(await Deno.readTextFile(join(copyDir, CHECKPOINT_LOG_NAME)), main);
    const lastNote = JSON.parse(main.split("\n")[1]!).note as string;
    assert.equal(await Deno.readTextFile(join(copyDir, LATEST_CHECKPOINT_NAME)), lastNote);
    assert.deepStrictEqual(plain(readCheckpoint(lastNote, verifier)), plain(second));
    // No temporary file is left behind.
    const names = [];
    for await (const e of Deno.readDir(copyDir)) names.push(e.name);
    assert.deepStrictEqual(names.sort(), [LATEST_CHECKPOINT_NAME, CHECKPOINT_LOG_NAME].sort());
    // A reopen appends to both.
    cp = await open(dir, { copyDir });
    await cp.write(chain(3), 2, null);
    await cp.close();
    const main2 = await Deno.readTextFile(join(dir, CHECKPOINT_LOG_NAME));
    assert.equal(main2.split("\n").length, 4);
    assert.equal(await Deno.readTextFile(join(copyDir, CHECKPOINT_LOG_NAME)), main2);
    assert.equal(readCheckpoint(await Deno.readTextFile(join(copyDir, LATEST_CHECKPOINT_NAME)), verifier).size, 3);
    assert.equal(cp.copyFailures, 0);
  });
});

Deno.test("a copy dir that cannot be written counts copyFailures and the checkpoint is still written", async () => {
  await withDir(async (dir) => {
    const copyDir = join(dir, "copy");
    const messages: string[] = [];
    const cp = await open(dir, { copyDir, log: (m) => messages.push(m) });
    await cp.write(chain(1), 1, null);
    // The mount goes away and a regular file takes its place: the copy paths lie under a regular file.
    await Deno.remove(copyDir, { recursive: true });
    await Deno.writeTextFile(copyDir, "not a directory");
    const c2 = await cp.write(chain(2), 1, null);
    const c3 = await cp.write(chain(3), 2, null);
    assert.equal(cp.copyFailures, 2);
    assert.equal(cp.written, 3);
    assert.deepStrictEqual([c2.size, c3.size, cp.last?.size], [2, 3, 3]);
    assert.equal(messages.length, 2);
    for (const m of messages) assert.ok(m.startsWith(`checkpoint copy to ${copyDir} failed: `), m);
    // It recovers when the directory is back.
    await Deno.remove(copyDir);
    await Deno.mkdir(copyDir);
    await cp.write(chain(4), 2, null);
    assert.equal(cp.copyFailures, 2);
    await cp.close();
    assert.deepStrictEqual((await readLog(join(dir, CHECKPOINT_LOG_NAME))).map((c) => c.size), [1, 2, 3, 4]);
    assert.deepStrictEqual((await readLog(join(copyDir, CHECKPOINT_LOG_NAME))).map((c) => c.size), [4]);
  });
});

Deno.test("Checkpointer.open() cuts a torn last line so the next checkpoint starts a clean line", async () => {
  await withDir(async (dir) => {
    const path = join(dir, CHECKPOINT_LOG_NAME);
    let cp = await open(dir);
    await cp.write(chain(1), 1, null);
    await cp.write(chain(2), 1, null);
    await cp.close();
    const whole = await Deno.readTextFile(path);
    // A crash while writing a third line, with a multi-byte character in what was written.
    await Deno.writeTextFile(path, whole + '{"note":"tlslog/t\u00e9st\\n3\\n');
    cp = await open(dir);
    assert.equal(await Deno.readTextFile(path), whole);
    assert.equal(cp.last?.size, 2);
    await cp.write(chain(3), 1, null);
    await cp.close();
    assert.deepStrictEqual((await readLog(path)).map((c) => c.size), [1, 2, 3]);
    assert.ok((await Deno.readTextFile(path)).startsWith(whole));
  });
});

Deno.test("readCheckpoint() rejects an unknown extension line and a note without time", () => {
  const time = "time 2026-11-22T09:00:00.000Z";
  const ok = readCheckpoint(noteWith([time, "file 1"]), verifier);
  assert.deepStrictEqual([ok.size, ok.file, ok.time, ok.audit, ok.pruned], [3, 1, T0, null, null]);
  assert.equal(readCheckpoint(noteWith([time]), verifier).file, 0);
  for (
    const extensions of [
      [time, "file 1", "color blue"],
      [time, "file x"],
      [time, "file 1 2"],
      [time, `audit 10`],
      [time, `audit x ${b64(hash(1))}`],
      [time, `audit 10 ${b64(hash(1)).slice(4)}`],
      [time, `pruned 10 ${b64(hash(1))}`],
      [time, `pruned 10 notbase64 2`],
      ["time", "file 1"],
    ]
  ) {
    assert.throws(() => readCheckpoint(noteWith(extensions), verifier), NoteError, JSON.stringify(extensions));
  }
  for (const extensions of [["file 1"], [], ["time not-a-date", "file 1"]]) {
    assert.throws(
      () => readCheckpoint(noteWith(extensions), verifier),
      (err: unknown) => err instanceof NoteError && /no time line/.test(err.message),
      JSON.stringify(extensions),
    );
  }
});

Deno.test({
  name: "readCheckpoint() rejects a pruned line whose file number is not a number",
  fn: () => {
    const time = "time 2026-11-22T09:00:00.000Z";
    assert.throws(() => readCheckpoint(noteWith([time, `pruned 10 ${b64(hash(1))} x`]), verifier), NoteError);
  },
});

Deno.test("parseCheckpointLog() reports malformed lines and a torn last line", () => {
  const note = noteWith(["time 2026-11-22T09:00:00.000Z"]);
  const good = JSON.stringify({ note });
  const text = [good, "garbage", '{"note":5}', "{}", "null", "", good, '{"note":"cut'].join("\n");
  const parsed = parseCheckpointLog(text);
  assert.deepStrictEqual(parsed.notes.map((n) => n.line), [1, 7]);
  assert.deepStrictEqual(parsed.notes.map((n) => n.note), [note, note]);
  assert.deepStrictEqual(parsed.malformed, [2, 3, 4, 5, 6]);
  assert.equal(parsed.torn, true);
  const clean = parseCheckpointLog(good + "\n" + good + "\n");
  assert.deepStrictEqual([clean.notes.length, clean.malformed, clean.torn], [2, [], false]);
  assert.deepStrictEqual(parseCheckpointLog(""), { notes: [], malformed: [], torn: false });
  // A complete-looking note without its newline is torn, not a note.
  const noNewline = parseCheckpointLog(good);
  assert.deepStrictEqual([noNewline.notes.length, noNewline.torn], [0, true]);
});
