/**
 * `tlslog verify`'s engine: checks a data directory against its hash chain
 * and its signed checkpoints, and names the file, line and kind of every
 * damage it finds.
 *
 * Three layers, each catching what the one before cannot:
 *
 * 1. Each data line against its chain file record (entry_chain.ts), with the
 *    record before it as the link: an edited, inserted, deleted or swapped
 *    line shows up at its own line number, the rest of the file still checks.
 * 2. Chain files against each other: a file's header must continue where the
 *    previous file ended; a missing number is a deleted file.
 * 3. The chain against the signed checkpoints (store_checkpoint.ts): catches a
 *    chain rewritten along with the data, a truncated tail, a deleted last
 *    file, and, with a trusted checkpoint kept elsewhere, a rollback of the
 *    whole directory to an older state.
 *
 * The audit log (audit_log.ts) is checked the same way against the `audit`
 * line of the checkpoints.
 *
 * @module
 */
import { join } from "node:path";
import { AUDIT_LOG_NAME, verifyAuditText } from "./audit_log.ts";
import {
  chainFileName,
  ChainFormatError,
  chainLines,
  type ChainRecord,
  type ChainState,
  chainStep,
  fromHex,
  GENESIS,
  parseChainFile,
  sameHash,
  splitLines,
} from "./entry_chain.ts";
import { type EncryptionKey, EncryptionKeyError, SealedFileError } from "./sealed_file.ts";
import { type NoteVerifier } from "./signed_note.ts";
import { CHECKPOINT_LOG_NAME, parseCheckpointLog, readCheckpoint, type StoreCheckpoint } from "./store_checkpoint.ts";
import { dataFileName, listStoreFiles, readStoreFile, readStoreText, StoreFileError } from "./store_files.ts";

/** What kind of damage was found. */
export type DamageKind =
  | "edited_entry"
  | "inserted_entry"
  | "deleted_entry"
  | "swapped_entries"
  | "missing_file"
  | "truncated_tail"
  | "rewritten_chain"
  | "broken_chain"
  | "bad_checkpoint"
  | "rollback"
  | "unreadable_file"
  | "missing_chain_file"
  | "audit_damage"
  | "audit_truncated";

/** One damage: where and what. */
export interface Damage {
  kind: DamageKind;
  /** File name inside the data directory. */
  file: string;
  /** 1-based line in that file, when the damage has one. */
  line?: number;
  message: string;
}

/** The outcome of {@linkcode verifyStore}. */
export interface VerifyReport {
  ok: boolean;
  /** Entries present and chained (excluding a pruned prefix). */
  entries: number;
  /** Sequence number of the last entry present. */
  lastSeq: number;
  /** Data files checked. */
  files: number;
  /** Entries deleted by retention, as the signed checkpoints record. */
  prunedThrough: number;
  /** Valid checkpoints in the log. */
  checkpoints: number;
  /** The latest valid checkpoint. */
  latest: StoreCheckpoint | null;
  /** Audit events checked. */
  auditEvents: number;
  damage: Damage[];
  /** Things worth knowing that are not damage (a torn last line, an uncovered tail). */
  notes: string[];
}

/** Options for {@linkcode verifyStore}. */
export interface VerifyOptions {
  /** The checkpoint signing key. */
  verifier: NoteVerifier;
  /** A checkpoint kept elsewhere (signed note text): the store must contain it. */
  trusted?: string;
  /** Keys for encrypted files. */
  keys?: readonly EncryptionKey[];
}

/** Raised for a trusted checkpoint that does not verify: the check cannot be made. */
export class TrustedCheckpointError extends Error {
  override name = "TrustedCheckpointError";
}

const NEWLINE = 0x0a;
/** How far the line-level check looks for a run of inserted or deleted lines. */
const SEARCH = 8;

/** Verifies the data directory `dir`. */
export async function verifyStore(dir: string, options: VerifyOptions): Promise<VerifyReport> {
  const damage: Damage[] = [];
  const notes: string[] = [];
  const keys = options.keys ?? [];

  // Checkpoints first: they say what must be there.
  const checkpoints = await readCheckpoints(dir, options.verifier, damage, notes);
  const latest = checkpoints.at(-1)?.checkpoint ?? null;
  const prunedRecords = checkpoints.flatMap((c) => c.checkpoint.pruned ? [c.checkpoint.pruned] : []);
  let trusted: StoreCheckpoint | null = null;
  if (options.trusted !== undefined) {
    try {
      trusted = readCheckpoint(options.trusted, options.verifier);
    } catch (err) {
      throw new TrustedCheckpointError(`the trusted checkpoint does not verify: ${(err as Error).message}`);
    }
  }

  // The chain, file by file. heads: the chain-file hash of every entry a checkpoint names.
  const wanted = new Set(checkpoints.map((c) => c.checkpoint.size));
  if (trusted) wanted.add(trusted.size);
  const heads = new Map<number, { hash: Uint8Array; file: string; line: number }>();
  const sets = await listStoreFiles(dir);
  let state: ChainState | null = null;
  let expectedIndex = 1;
  let files = 0;
  let firstSeq = 0;
  let lastFile = "";
  let lastLine = 0;
  for (const set of sets) {
    const dataName = set.data ?? dataFileName(set.index);
    const chainName = set.chain ?? chainFileName(set.index);
    let chain;
    let chainText: string | null = null;
    try {
      chainText = set.chain ? await readStoreText(dir, set.chain) : null;
      chain = set.chain ? parseChainFile(chainText!, set.chain) : null;
    } catch (err) {
      if (!(err instanceof ChainFormatError || err instanceof StoreFileError)) throw err;
      damage.push({ kind: "broken_chain", file: chainName, line: 1, message: err.message });
      chain = null;
    }
    if (state === null) {
      // The first file present: the chain starts at genesis or at a signed retention record.
      const prev = chain?.prev ?? { seq: 0, head: GENESIS };
      const pruned = prunedRecords.find((p) => p.seq === prev.seq && sameHash(p.head, prev.head));
      if (prev.seq > 0 && !pruned) {
        const missing = [];
        for (let i = 1; i < set.index; i++) missing.push(dataFileName(i));
        damage.push({
          kind: "missing_file",
          file: missing[0] ?? dataName,
          message: `entries 1..${prev.seq} are missing: ${
            missing.length > 0 ? missing.join(", ") : "the files before " + dataName
          } deleted without a signed retention record`,
        });
      }
      state = prev;
      firstSeq = prev.seq;
      expectedIndex = set.index;
    }
    const gap = set.index > expectedIndex;
    if (gap) {
      const resume = chain?.prev.seq ?? state.seq;
      for (let i = expectedIndex; i < set.index; i++) {
        damage.push({
          kind: "missing_file",
          file: dataFileName(i),
          message: `file deleted: entries ${state.seq + 1}..${resume} are missing`,
        });
      }
    }
    expectedIndex = set.index + 1;
    files++;
    if (chain) {
      if (chain.file !== set.index) {
        damage.push({
          kind: "broken_chain",
          file: chainName,
          line: 1,
          message: `chain file names data file ${chain.file}, not ${set.index}: files were renamed`,
        });
      } else if (chain.prev.seq !== state.seq || !sameHash(chain.prev.head, state.head)) {
        if (gap) {
          // Reported as the missing file(s) above.
        } else if (chain.prev.seq > state.seq) {
          damage.push({
            kind: "deleted_entry",
            file: lastFile || dataName,
            line: lastLine + 1,
            message: `entries ${state.seq + 1}..${chain.prev.seq} are missing from the end of ${lastFile}`,
          });
        } else {
          damage.push({
            kind: "broken_chain",
            file: chainName,
            line: 1,
            message: `chain does not continue from the previous file (it starts after entry ${chain.prev.seq}, ` +
              `the previous file ended at ${state.seq})`,
          });
        }
      }
      for (const line of chain.malformed) {
        damage.push({ kind: "broken_chain", file: chainName, line, message: "not a chain record" });
      }
    } else if (set.chain === null) {
      damage.push({
        kind: "missing_chain_file",
        file: chainName,
        message: `the chain file of ${dataName} is missing: its lines cannot be checked one by one`,
      });
    }
    if (set.data === null) {
      const records = chain?.records ?? [];
      damage.push({
        kind: "missing_file",
        file: dataName,
        message: `data file deleted: its chain file lists entries ${records[0]?.seq ?? "?"}..${
          records.at(-1)?.seq ?? "?"
        }`,
      });
      for (const r of records) if (wanted.has(r.seq)) heads.set(r.seq, { hash: r.hash, file: dataName, line: 0 });
      state = records.length > 0 ? { seq: records.at(-1)!.seq, head: records.at(-1)!.hash } : state;
      continue;
    }
    let data: Uint8Array;
    try {
      data = await readStoreFile(dir, set.data, keys);
    } catch (err) {
      if (err instanceof EncryptionKeyError) throw err;
      if (!(err instanceof SealedFileError || err instanceof StoreFileError)) throw err;
      damage.push({ kind: "unreadable_file", file: set.data, message: err.message });
      const records = chain?.records ?? [];
      if (records.length > 0) state = { seq: records.at(-1)!.seq, head: records.at(-1)!.hash };
      continue;
    }
    const base: ChainState = chain?.prev ?? state;
    // Fast path: the chain file is exactly what chaining the data gives, so every line checks.
    const intact = chain !== null && chainText !== null && !chain.torn && chain.malformed.length === 0 &&
      (data.length === 0 || data[data.length - 1] === NEWLINE) &&
      chainLines(base, data).records === chainText.slice(chainText.indexOf("\n") + 1);
    const lines = intact ? [] : splitLines(data);
    if (data.length > 0 && data[data.length - 1] !== NEWLINE) {
      damage.push({
        kind: "truncated_tail",
        file: set.data,
        line: lines.length,
        message: "the last line is cut short (no newline)",
      });
    }
    const records = chain?.records ?? recordsFromData(base, lines);
    const isLast = set === sets.at(-1);
    if (!intact) checkLines(set.data, lines, base, records, damage, isLast ? "truncated_tail" : "deleted_entry");
    for (const r of records) {
      if (wanted.has(r.seq)) heads.set(r.seq, { hash: r.hash, file: set.data, line: r.seq - base.seq });
    }
    if (records.length > 0) state = { seq: records.at(-1)!.seq, head: records.at(-1)!.hash };
    lastFile = set.data;
    lastLine = intact ? records.length : lines.length;
  }
  state ??= { seq: 0, head: GENESIS };

  // Against the checkpoints: the latest must be covered, and every one must match the chain.
  const prunedThrough = Math.max(0, ...prunedRecords.map((p) => p.seq));
  let lastGood = firstSeq;
  for (const { line, checkpoint } of checkpoints) {
    if (checkpoint.size <= firstSeq) continue;
    const at = heads.get(checkpoint.size);
    if (checkpoint.size > state.seq) continue; // reported once below, against the latest
    if (at && !sameHash(at.hash, checkpoint.hash)) {
      const where = heads.get(lastGood + 1);
      damage.push({
        kind: "rewritten_chain",
        file: at.file,
        line: at.line || undefined,
        message: `the chain at entry ${checkpoint.size} differs from the signed checkpoint at ${CHECKPOINT_LOG_NAME} ` +
          `line ${line}: entries ${lastGood + 1}..${checkpoint.size} were rewritten together with their chain` +
          (where ? ` (from ${where.file})` : ""),
      });
      break;
    }
    lastGood = checkpoint.size;
  }
  if (latest && latest.size > state.seq) {
    const expectedLast = latest.file;
    const lastPresent = sets.filter((s) => s.data || s.chain).at(-1)?.index ?? 0;
    if (expectedLast > lastPresent) {
      for (let i = lastPresent + 1; i <= expectedLast; i++) {
        damage.push({
          kind: "missing_file",
          file: dataFileName(i),
          message: `file deleted: the latest signed checkpoint covers entries up to ${latest.size} in this file`,
        });
      }
    } else {
      damage.push({
        kind: "truncated_tail",
        file: lastFile || dataFileName(expectedLast),
        line: lastLine + 1,
        message: `the store ends at entry ${state.seq}, the latest signed checkpoint (${
          new Date(latest.time).toISOString()
        }) covers ${latest.size}: entries ${state.seq + 1}..${latest.size} were cut off`,
      });
    }
  } else if (latest && state.seq > latest.size) {
    notes.push(
      `entries ${latest.size + 1}..${state.seq} were written after the latest checkpoint: ` +
        `they are chained but no signature covers them yet`,
    );
  }
  if (trusted) {
    const at = heads.get(trusted.size);
    if (!latest || trusted.size > latest.size || trusted.size > state.seq) {
      damage.push({
        kind: "rollback",
        file: CHECKPOINT_LOG_NAME,
        line: checkpoints.at(-1)?.line,
        message: `the store's latest checkpoint covers ${latest?.size ?? 0} entries (${
          latest ? new Date(latest.time).toISOString() : "none"
        }), older than the trusted checkpoint's ${trusted.size} (${
          new Date(trusted.time).toISOString()
        }): the directory was rolled back`,
      });
    } else if (at && !sameHash(at.hash, trusted.hash)) {
      damage.push({
        kind: "rewritten_chain",
        file: at.file,
        line: at.line || undefined,
        message: `the chain at entry ${trusted.size} differs from the trusted checkpoint: the store was rewritten`,
      });
    }
  }

  const auditEvents = await checkAudit(dir, checkpoints.map((c) => c.checkpoint), damage, notes);
  return {
    ok: damage.length === 0,
    entries: state.seq - firstSeq,
    lastSeq: state.seq,
    files,
    prunedThrough,
    checkpoints: checkpoints.length,
    latest,
    auditEvents,
    damage,
    notes,
  };
}

/** Valid checkpoints of the log, in order; bad ones become damage. */
async function readCheckpoints(
  dir: string,
  verifier: NoteVerifier,
  damage: Damage[],
  notes: string[],
): Promise<{ line: number; checkpoint: StoreCheckpoint }[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, CHECKPOINT_LOG_NAME));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    damage.push({ kind: "bad_checkpoint", file: CHECKPOINT_LOG_NAME, message: "the checkpoint log is missing" });
    return [];
  }
  const parsed = parseCheckpointLog(text);
  if (parsed.torn) notes.push(`${CHECKPOINT_LOG_NAME}: the last line is cut short (a crash while writing it)`);
  for (const line of parsed.malformed) {
    damage.push({ kind: "bad_checkpoint", file: CHECKPOINT_LOG_NAME, line, message: "not a checkpoint record" });
  }
  const out: { line: number; checkpoint: StoreCheckpoint }[] = [];
  for (const { line, note } of parsed.notes) {
    let c: StoreCheckpoint;
    try {
      c = readCheckpoint(note, verifier);
    } catch (err) {
      damage.push({
        kind: "bad_checkpoint",
        file: CHECKPOINT_LOG_NAME,
        line,
        message: `checkpoint does not verify (edited or forged): ${(err as Error).message}`,
      });
      continue;
    }
    const before = out.at(-1)?.checkpoint;
    if (before && (c.size < before.size || c.time < before.time || c.origin !== before.origin)) {
      damage.push({
        kind: "rollback",
        file: CHECKPOINT_LOG_NAME,
        line,
        message:
          `checkpoint goes back (size ${c.size} at ${new Date(c.time).toISOString()} after size ${before.size} ` +
          `at ${new Date(before.time).toISOString()}${c.origin !== before.origin ? ", another origin" : ""})`,
      });
      continue;
    }
    out.push({ line, checkpoint: c });
  }
  return out;
}

/** Checks the audit log's own chain and its size and head against the checkpoints. */
async function checkAudit(
  dir: string,
  checkpoints: StoreCheckpoint[],
  damage: Damage[],
  notes: string[],
): Promise<number> {
  let text = "";
  try {
    text = await Deno.readTextFile(join(dir, AUDIT_LOG_NAME));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    if (checkpoints.some((c) => c.audit && c.audit.size > 0)) {
      damage.push({ kind: "audit_truncated", file: AUDIT_LOG_NAME, message: "the audit log is missing" });
    }
    return 0;
  }
  const result = verifyAuditText(text);
  if (result.tornTail) notes.push(`${AUDIT_LOG_NAME}: the last line is cut short (a crash while writing it)`);
  for (const d of result.damage) {
    damage.push({ kind: "audit_damage", file: AUDIT_LOG_NAME, line: d.line, message: `${d.kind}: ${d.message}` });
  }
  // A checkpoint's audit size is in bytes: the head there is the `prev` of the line that starts at that
  // byte, or the computed head after the last line.
  const lines = text.split("\n");
  lines.pop();
  const startsAt = new Map<number, { line: number; prev: string }>();
  let offset = 0;
  lines.forEach((line, i) => {
    try {
      startsAt.set(offset, { line: i + 1, prev: String(JSON.parse(line).prev) });
    } catch {
      // malformed: reported by verifyAuditText
    }
    offset += encoder.encode(line).length + 1;
  });
  const headAt = (bytes: number): Uint8Array | null =>
    bytes === result.head.size ? result.head.hash : fromHex(startsAt.get(bytes)?.prev ?? "");
  const lineAt = (bytes: number) => startsAt.get(bytes)?.line ?? lines.length + 1;
  const withAudit = checkpoints.filter((c) => c.audit);
  const latest = withAudit.at(-1)?.audit;
  if (latest && latest.size > result.head.size) {
    damage.push({
      kind: "audit_truncated",
      file: AUDIT_LOG_NAME,
      line: lines.length + 1,
      message: `the audit log ends at byte ${result.head.size}, the latest checkpoint covers ${latest.size} bytes`,
    });
  } else if (result.damage.length === 0) {
    for (const c of withAudit) {
      const head = headAt(c.audit!.size);
      if (head && !sameHash(head, c.audit!.hash)) {
        damage.push({
          kind: "audit_damage",
          file: AUDIT_LOG_NAME,
          line: lineAt(c.audit!.size) - 1,
          message: `the audit log up to byte ${c.audit!.size} differs from the signed checkpoint: it was rewritten`,
        });
        break;
      }
    }
  }
  return lines.length;
}

const encoder = new TextEncoder();

/** Chain records computed from the data, for a file whose chain file is missing. */
function recordsFromData(base: ChainState, lines: Uint8Array[]): ChainRecord[] {
  let head = base.head;
  return lines.map((line, i) => {
    head = chainStep(head, line);
    return { seq: base.seq + i + 1, hash: head, line: i + 2 };
  });
}

/**
 * Compares data lines with chain records, the previous record being the
 * link, and classifies each mismatch by looking ahead: edited (the next line
 * links from this record), swapped (two lines each match the other's record),
 * inserted (skipping k lines re-synchronises), deleted (skipping k records
 * re-synchronises).
 */
function checkLines(
  file: string,
  lines: Uint8Array[],
  base: ChainState,
  records: ChainRecord[],
  damage: Damage[],
  tailKind: "truncated_tail" | "deleted_entry",
): void {
  const m = lines.length;
  const n = records.length;
  const links = (prev: Uint8Array, i: number, j: number) =>
    i < m && j < n && sameHash(chainStep(prev, lines[i]!), records[j]!.hash);
  const hashBefore = (j: number) => j === 0 ? base.head : records[j - 1]!.hash;
  let i = 0;
  let j = 0;
  while (i < m && j < n) {
    const prev = hashBefore(j);
    if (links(prev, i, j)) {
      i++;
      j++;
      continue;
    }
    const seq = records[j]!.seq;
    // Whether the lines from i on link up with the records from j on.
    const resumes = (i2: number, j2: number) => i2 >= m || j2 >= n ? i2 >= m && j2 >= n : links(hashBefore(j2), i2, j2);
    const swapped = links(prev, i + 1, j) && links(records[j]!.hash, i, j + 1);
    // A copy of the next-but-one line inserted here also reads as a swap: take what resumes after.
    if (swapped && !(resumes(i + 2, j + 1) && !resumes(i + 2, j + 2))) {
      damage.push({
        kind: "swapped_entries",
        file,
        line: i + 1,
        message: `lines ${i + 1} and ${i + 2} are swapped (entries ${seq} and ${seq + 1})`,
      });
      i += 2;
      j += 2;
      continue;
    }
    if ((i + 1 === m && j + 1 === n) || links(records[j]!.hash, i + 1, j + 1)) {
      damage.push({ kind: "edited_entry", file, line: i + 1, message: `entry ${seq} was altered` });
      i++;
      j++;
      continue;
    }
    let resolved = false;
    for (let k = 1; k <= SEARCH && !resolved; k++) {
      if (links(prev, i + k, j)) {
        damage.push({
          kind: "inserted_entry",
          file,
          line: i + 1,
          message: k === 1 ? `line ${i + 1} is not in the chain` : `lines ${i + 1}..${i + k} are not in the chain`,
        });
        i += k;
        resolved = true;
      } else if (links(hashBefore(j + k), i, j + k)) {
        damage.push({
          kind: "deleted_entry",
          file,
          line: i + 1,
          message: k === 1
            ? `entry ${seq} is missing before line ${i + 1}`
            : `entries ${seq}..${seq + k - 1} are missing before line ${i + 1}`,
        });
        j += k;
        resolved = true;
      }
    }
    if (!resolved) {
      damage.push({
        kind: "edited_entry",
        file,
        line: i + 1,
        message: `line ${i + 1} does not match entry ${seq}, nor do the lines after it link up`,
      });
      i++;
      j++;
    }
  }
  if (i < m) {
    damage.push({
      kind: "inserted_entry",
      file,
      line: i + 1,
      message: `lines ${i + 1}..${m} are not in the chain (appended)`,
    });
  } else if (j < n) {
    damage.push({
      kind: tailKind,
      file,
      line: m + 1,
      message: `the data ends at line ${m}, its chain file goes on to entry ${records[n - 1]!.seq}: ` +
        `entries ${records[j]!.seq}..${records[n - 1]!.seq} were cut off`,
    });
  }
}
