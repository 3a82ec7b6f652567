/**
 * The tamper-evidence mutation suite, in the manner of transparency-dev/merkle's
 * proof tests: a real collector builds a store over TLS; then each kind of
 * damage is applied at random places, many times, each to a fresh copy, and
 * `verifyStore` must fail and name the file, line and kind. The intact store
 * must pass. The random source is seeded; a failure prints the seed and the
 * mutation so that it can be replayed.
 *
 * The attacker here can read and write everything in the data directory, and
 * holds the encryption key where there is one (so an edit is re-encrypted,
 * and only the chain and the checkpoints stand in its way), but not the
 * checkpoint signing key.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { chainLines, parseChainFile, toHex } from "../server/entry_chain.ts";
import { type EncryptionKey, keyFromBytes, SealedWriter, unseal } from "../server/sealed_file.ts";
import { createSigner, newSigningKeyPem, parseVerifierKey } from "../server/signed_note.ts";
import { CHECKPOINT_LOG_NAME, checkpointText, parseCheckpointLog, readCheckpoint } from "../server/store_checkpoint.ts";
import { isCompressedName, isEncryptedName, listStoreFiles, type StoreFileSet } from "../server/store_files.ts";
import { type Damage, type DamageKind, type VerifyReport, verifyStore } from "../server/store_verifier.ts";
import { AUDIT_LOG_NAME } from "../server/audit_log.ts";
import { runTlslog, startTestCollector, testCerts } from "./test_support.ts";

/** Seeded PRNG (mulberry32): the same seed gives the same mutations. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Built {
  dir: string;
  vkey: string;
  key: EncryptionKey | null;
  total: number;
}

/** A store made by a real collector: `total` entries sent with `send` in small batches, 10 entries per file. */
async function buildStore(total: number, encrypt: boolean): Promise<Built> {
  const key = encrypt ? await keyFromBytes(crypto.getRandomValues(new Uint8Array(32))) : null;
  const tc = await startTestCollector({
    rotateEntries: 10,
    compressRotated: encrypt,
    encryptKey: key ?? undefined,
    checkpointIntervalMs: 50,
  });
  const input = await Deno.makeTempFile({ suffix: ".jsonl" });
  try {
    const lines = Array.from(
      { length: total },
      (_, i) => JSON.stringify({ id: i, note: `consultation ${i}`, dept: ["cardiology", "dermatology"][i % 2] }),
    );
    await Deno.writeTextFile(input, lines.join("\n") + "\n");
    const { caPath } = await testCerts();
    const r = await runTlslog([
      "send",
      "--port",
      String(tc.port),
      "--ca",
      caPath,
      "--batch-size",
      "7",
      "--max-in-flight",
      "1",
      input,
    ]);
    assert.equal(r.code, 0, r.stderr);
    await tc.collector.close();
    return { dir: tc.dataDir, vkey: tc.collector.verifierKey, key, total };
  } finally {
    await Deno.remove(input);
  }
}

async function copyStore(src: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-mutant-" });
  for await (const e of Deno.readDir(src)) {
    if (e.isFile) await Deno.copyFile(join(src, e.name), join(dir, e.name));
  }
  return dir;
}

async function readPlain(dir: string, name: string, key: EncryptionKey | null): Promise<string> {
  let bytes: Uint8Array = await Deno.readFile(join(dir, name));
  if (isEncryptedName(name)) bytes = await unseal(bytes, key ? [key] : [], name);
  if (isCompressedName(name)) bytes = new Uint8Array(gunzipSync(bytes));
  return new TextDecoder().decode(bytes);
}

/** Writes `text` back in the file's own form (compressed, encrypted), as an attacker with the key would. */
async function writePlain(dir: string, name: string, text: string, key: EncryptionKey | null): Promise<void> {
  let bytes: Uint8Array = new TextEncoder().encode(text);
  if (isCompressedName(name)) bytes = new Uint8Array(gzipSync(bytes));
  if (isEncryptedName(name)) {
    const w = await SealedWriter.create(key!);
    const record = await w.seal(bytes);
    bytes = new Uint8Array([...w.header, ...record]);
  }
  await Deno.writeFile(join(dir, name), bytes);
}

const linesOf = (text: string) => text === "" ? [] : text.slice(0, -1).split("\n");
const textOf = (lines: string[]) => lines.length === 0 ? "" : lines.join("\n") + "\n";

/** The place a mutation must be reported at. */
interface Expected {
  kind: DamageKind;
  /** The file's number (data file names vary in form), or the exact name for other files. */
  file: number | string;
  line?: number;
}

function matches(d: Damage, e: Expected): boolean {
  const file = typeof e.file === "number"
    ? d.file.startsWith(`tlslog-${String(e.file).padStart(8, "0")}.jsonl`)
    : d.file === e.file;
  return d.kind === e.kind && file && (e.line === undefined || d.line === e.line);
}

type Mutation = (dir: string, sets: StoreFileSet[], pick: (n: number) => number) => Promise<Expected>;

/** Picks a data file with at least `min` lines. */
async function pickFile(
  dir: string,
  sets: StoreFileSet[],
  pick: (n: number) => number,
  key: EncryptionKey | null,
  min: number,
  notLast = false,
): Promise<{ set: StoreFileSet; lines: string[] }> {
  for (;;) {
    const candidates = notLast ? sets.slice(0, -1) : sets;
    const set = candidates[pick(candidates.length)]!;
    const lines = linesOf(await readPlain(dir, set.data!, key));
    if (lines.length >= min) return { set, lines };
  }
}

function mutations(key: EncryptionKey | null, vkey: string): Record<string, Mutation> {
  return {
    async "edit an entry"(dir, sets, pick) {
      const { set, lines } = await pickFile(dir, sets, pick, key, 1);
      const l = pick(lines.length);
      const line = lines[l]!;
      // Change one character inside the JSON (a digit or a letter), keeping it JSON.
      const at = line.search(/[0-9a-z](?=[^"]*"[,}])/);
      const ch = line[at]!;
      lines[l] = line.slice(0, at) + (ch === "1" ? "2" : /\d/.test(ch) ? "1" : ch === "x" ? "y" : "x") +
        line.slice(at + 1);
      await writePlain(dir, set.data!, textOf(lines), key);
      return { kind: "edited_entry", file: set.index, line: l + 1 };
    },
    async "insert an entry"(dir, sets, pick) {
      const { set, lines } = await pickFile(dir, sets, pick, key, 1);
      const l = pick(lines.length + 1);
      // A forged line, or a copy of a line that is not a neighbour (a copy next to its original is
      // the same bytes: either of the two is "the inserted one").
      const source = pick(lines.length);
      const forged = pick(2) === 0 || source === l - 1 || source === l
        ? JSON.stringify({ id: -1, note: "forged" })
        : lines[source]!;
      lines.splice(l, 0, forged);
      await writePlain(dir, set.data!, textOf(lines), key);
      return { kind: "inserted_entry", file: set.index, line: l + 1 };
    },
    async "delete an entry"(dir, sets, pick) {
      // Not the very last entry of the store: that is a truncated tail, a mutation of its own.
      const { set, lines } = await pickFile(dir, sets, pick, key, 2);
      const last = set === sets.at(-1);
      const l = pick(last ? lines.length - 1 : lines.length);
      lines.splice(l, 1);
      await writePlain(dir, set.data!, textOf(lines), key);
      return { kind: "deleted_entry", file: set.index, line: l + 1 };
    },
    async "swap two entries"(dir, sets, pick) {
      const { set, lines } = await pickFile(dir, sets, pick, key, 2);
      const l = pick(lines.length - 1);
      [lines[l], lines[l + 1]] = [lines[l + 1]!, lines[l]!];
      await writePlain(dir, set.data!, textOf(lines), key);
      return { kind: "swapped_entries", file: set.index, line: l + 1 };
    },
    async "delete a data file"(dir, sets, pick) {
      const set = sets[pick(sets.length)]!;
      await Deno.remove(join(dir, set.data!));
      // Half the time the attacker removes its chain file too.
      if (pick(2) === 0) await Deno.remove(join(dir, set.chain!));
      return { kind: "missing_file", file: set.index };
    },
    async "truncate the tail"(dir, sets, pick) {
      const set = sets.at(-1)!;
      const lines = linesOf(await readPlain(dir, set.data!, key));
      const keep = pick(lines.length);
      await writePlain(dir, set.data!, textOf(lines.slice(0, keep)), key);
      // Half the time the chain file is cut to match, so that only the checkpoint can tell.
      if (pick(2) === 0) {
        const chain = await readPlain(dir, set.chain!, null);
        const chainLinesKept = chain.split("\n").slice(0, keep + 1);
        await writePlain(dir, set.chain!, chainLinesKept.join("\n") + "\n", null);
      }
      return { kind: "truncated_tail", file: set.index, line: keep + 1 };
    },
    async "forge a checkpoint"(dir, _sets, pick) {
      const path = join(dir, CHECKPOINT_LOG_NAME);
      const log = parseCheckpointLog(await Deno.readTextFile(path));
      const latest = readCheckpoint(log.notes.at(-1)!.note, parseVerifierKey(vkey));
      // Another key under the same name signs a checkpoint that claims a different state.
      const forger = createSigner(newSigningKeyPem(), parseVerifierKey(vkey).name);
      const note = forger.sign(checkpointText({ ...latest, size: latest.size + 1 + pick(5), time: latest.time + 1 }));
      const lines = (await Deno.readTextFile(path)).split("\n").slice(0, -1);
      const at = pick(lines.length + 1);
      lines.splice(at, 0, JSON.stringify({ note }));
      await Deno.writeTextFile(path, lines.join("\n") + "\n");
      return { kind: "bad_checkpoint", file: CHECKPOINT_LOG_NAME, line: at + 1 };
    },
    async "edit a checkpoint"(dir, _sets, pick) {
      const path = join(dir, CHECKPOINT_LOG_NAME);
      const lines = (await Deno.readTextFile(path)).split("\n").slice(0, -1);
      const at = pick(lines.length);
      const note: string = JSON.parse(lines[at]!).note;
      // Change the size line (line 2 of the note) or one character of the hash line.
      const parts = note.split("\n");
      if (pick(2) === 0) parts[1] = String(Number(parts[1]) + 1 + pick(9));
      else parts[2] = (parts[2]![0] === "A" ? "B" : "A") + parts[2]!.slice(1);
      lines[at] = JSON.stringify({ note: parts.join("\n") });
      await Deno.writeTextFile(path, lines.join("\n") + "\n");
      return { kind: "bad_checkpoint", file: CHECKPOINT_LOG_NAME, line: at + 1 };
    },
    async "rewrite the chain after an edit"(dir, sets, pick) {
      // The attacker edits an entry and recomputes every chain file from there: only the signatures catch it.
      const { set, lines } = await pickFile(dir, sets, pick, key, 1);
      const l = pick(lines.length);
      lines[l] = lines[l]!.replace(/"id":(\d+)/, (_, n) => `"id":${Number(n) + 1000}`);
      await writePlain(dir, set.data!, textOf(lines), key);
      let state = parseChainFile(await readPlain(dir, set.chain!, null), set.chain!).prev;
      for (const s of sets.filter((s) => s.index >= set.index)) {
        const data = await readPlain(dir, s.data!, key);
        const header = JSON.stringify({ chain: 1, file: s.index, prev_seq: state.seq, prev: toHex(state.head) });
        const chained = chainLines(state, new TextEncoder().encode(data));
        await writePlain(dir, s.chain!, header + "\n" + chained.records, null);
        state = chained.state;
      }
      const seq = parseChainFile(await readPlain(dir, set.chain!, null), set.chain!).prev.seq + l + 1;
      // The first checkpoint at or after the edited entry no longer matches: it is named.
      const checkpoints = parseCheckpointLog(await Deno.readTextFile(join(dir, CHECKPOINT_LOG_NAME))).notes
        .map((n) => readCheckpoint(n.note, parseVerifierKey(vkey)));
      const first = checkpoints.find((c) => c.size >= seq)!;
      return { kind: "rewritten_chain", file: fileOfSeq(sets, first.size, dir) };
    },
  };
}

/** Cache of each file's last sequence number, for "which file holds entry n". */
let seqEnds: { index: number; last: number }[] = [];
function fileOfSeq(_sets: StoreFileSet[], seq: number, _dir: string): number {
  return seqEnds.find((s) => s.last >= seq)!.index;
}

async function loadSeqEnds(dir: string, sets: StoreFileSet[]): Promise<void> {
  seqEnds = [];
  for (const s of sets) {
    const chain = parseChainFile(await readPlain(dir, s.chain!, null), s.chain!);
    seqEnds.push({ index: s.index, last: chain.records.at(-1)?.seq ?? chain.prev.seq });
  }
}

function describe(report: VerifyReport): string {
  return report.damage.map((d) => `${d.file}:${d.line ?? "-"} ${d.kind}: ${d.message}`).join("\n") || "(no damage)";
}

async function runSuite(built: Built, rounds: number, seed: number): Promise<number> {
  const verifier = parseVerifierKey(built.vkey);
  const keys = built.key ? [built.key] : [];
  const intact = await verifyStore(built.dir, { verifier, keys });
  assert.ok(intact.ok, `the intact store fails: ${describe(intact)}`);
  assert.equal(intact.lastSeq, built.total);
  const sets = await listStoreFiles(built.dir);
  await loadSeqEnds(built.dir, sets);
  const random = rng(seed);
  const pick = (n: number) => Math.floor(random() * n);
  let applied = 0;
  for (const [name, mutate] of Object.entries(mutations(built.key, built.vkey))) {
    for (let round = 0; round < rounds; round++) {
      const dir = await copyStore(built.dir);
      try {
        const expected = await mutate(dir, await listStoreFiles(dir), pick);
        const report = await verifyStore(dir, { verifier, keys });
        const context = `seed ${seed}, "${name}" round ${round}: want ${expected.kind} at ${expected.file}:${
          expected.line ?? "-"
        }; got:\n${describe(report)}`;
        assert.equal(report.ok, false, context);
        assert.ok(report.damage.some((d) => matches(d, expected)), context);
        // And nothing else is blamed: one mutation, one place.
        assert.equal(report.damage.length, 1, context);
        applied++;
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
  }
  return applied;
}

const SEED = Number(Deno.env.get("TLSLOG_MUTATION_SEED") ?? 20261122);

Deno.test("mutation suite: 225 random mutations of a plain store made by serve are each found and placed", async () => {
  const built = await buildStore(240, false);
  try {
    const applied = await runSuite(built, 25, SEED);
    assert.equal(applied, 225);
  } finally {
    await Deno.remove(built.dir, { recursive: true });
  }
});

Deno.test("mutation suite: 90 mutations of a compressed, encrypted store, made with the key, are each found and placed", async () => {
  const built = await buildStore(150, true);
  try {
    const sets = await listStoreFiles(built.dir);
    assert.ok(sets.some((s) => s.data!.endsWith(".jsonl.gz.enc")), "no closed file was compressed and encrypted");
    const applied = await runSuite(built, 10, SEED + 1);
    assert.equal(applied, 90);
  } finally {
    await Deno.remove(built.dir, { recursive: true });
  }
});

Deno.test("mutation suite: a store rolled back to any earlier checkpoint passes alone and fails against the trusted one", async () => {
  const built = await buildStore(120, false);
  try {
    const verifier = parseVerifierKey(built.vkey);
    const logText = await Deno.readTextFile(join(built.dir, CHECKPOINT_LOG_NAME));
    const notes = parseCheckpointLog(logText).notes;
    const trusted = notes.at(-1)!.note;
    const sets = await listStoreFiles(built.dir);
    await loadSeqEnds(built.dir, sets);
    const random = rng(SEED + 2);
    let rolled = 0;
    for (let round = 0; round < 20; round++) {
      // An old copy of the directory: everything cut back consistently to an earlier checkpoint.
      const k = Math.floor(random() * (notes.length - 1));
      const old = readCheckpoint(notes[k]!.note, verifier);
      if (old.size === readCheckpoint(trusted, verifier).size) continue;
      const dir = await copyStore(built.dir);
      try {
        await rollBack(dir, old.size, old.audit?.size ?? 0, notes.slice(0, k + 1).map((n) => n.note));
        const alone = await verifyStore(dir, { verifier });
        assert.ok(
          alone.ok,
          `round ${round} (back to ${old.size}): the old copy is consistent by itself:\n${describe(alone)}`,
        );
        const report = await verifyStore(dir, { verifier, trusted });
        assert.ok(
          report.damage.some((d) => d.kind === "rollback" && d.file === CHECKPOINT_LOG_NAME),
          `round ${round} (back to ${old.size}):\n${describe(report)}`,
        );
        rolled++;
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
    assert.ok(rolled >= 10, `only ${rolled} rollbacks tried`);
  } finally {
    await Deno.remove(built.dir, { recursive: true });
  }
});

/** Cuts a plain store back to `size` entries, its checkpoint log to `notes` and its audit log to `auditBytes`. */
async function rollBack(dir: string, size: number, auditBytes: number, notes: string[]): Promise<void> {
  for (const s of await listStoreFiles(dir)) {
    const chain = parseChainFile(await readPlain(dir, s.chain!, null), s.chain!);
    if (chain.prev.seq >= size && !(size === 0 && s.index === 1)) {
      await Deno.remove(join(dir, s.data!));
      await Deno.remove(join(dir, s.chain!));
      continue;
    }
    const keep = Math.min(chain.records.length, size - chain.prev.seq);
    const lines = linesOf(await readPlain(dir, s.data!, null)).slice(0, keep);
    await writePlain(dir, s.data!, textOf(lines), null);
    const chainText = (await readPlain(dir, s.chain!, null)).split("\n").slice(0, keep + 1).join("\n") + "\n";
    await writePlain(dir, s.chain!, chainText, null);
  }
  await Deno.writeTextFile(
    join(dir, CHECKPOINT_LOG_NAME),
    notes.map((note) => JSON.stringify({ note })).join("\n") + "\n",
  );
  const audit = await Deno.readFile(join(dir, AUDIT_LOG_NAME));
  await Deno.writeFile(join(dir, AUDIT_LOG_NAME), audit.subarray(0, auditBytes));
}
