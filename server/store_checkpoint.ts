/**
 * Signed checkpoints of the store: what they say, where they are kept, and
 * the writer the collector uses.
 *
 * A checkpoint is a C2SP signed note (signed_note.ts) whose text is a C2SP
 * tlog-checkpoint: origin, size (entries chained so far), base64 head of the
 * entry hash chain (entry_chain.ts; a linear chain head, not a Merkle root),
 * then these extension lines:
 *
 *     time 2026-11-22T09:00:00.000Z      when it was signed
 *     file 7                             the data file holding entry `size` (or being written)
 *     audit 120 <base64 hash>            size and head of the audit log (audit_log.ts)
 *     pruned 40 <base64 hash> 4          entries 1..40 (files up to 4) were deleted by retention; h_40
 *
 * Every checkpoint is appended to `tlslog-checkpoints.log` in the data
 * directory, one JSON line `{"note":"<signed note>"}` each; with a copy
 * directory (`--checkpoint-copy`, an off-host mount in real use) also to the
 * same file there, and the latest note alone to `<copy dir>/checkpoint`,
 * which is what `tlslog verify --trusted-checkpoint` takes.
 *
 * @module
 */
import { join } from "node:path";
import { writeAll } from "../shared/bytes.ts";
import { syncDir } from "./commit_log.ts";
import type { AuditHead } from "./audit_log.ts";
import type { ChainState } from "./entry_chain.ts";
import {
  formatCheckpoint,
  fromBase64,
  NoteError,
  type NoteSigner,
  type NoteVerifier,
  openNote,
  parseCheckpoint,
  parseVerifierKey,
  toBase64,
} from "./signed_note.ts";

/** The checkpoint log's name, in the data directory and in the copy directory. */
export const CHECKPOINT_LOG_NAME = "tlslog-checkpoints.log";
/** Where `serve` leaves the verifier key in the data directory (a convenience, not a trust anchor). */
export const VERIFIER_KEY_NAME = "tlslog-checkpoint.pub";
/** The latest checkpoint's name in the copy directory. */
export const LATEST_CHECKPOINT_NAME = "checkpoint";

/** What retention removed: entries 1..seq, in files up to throughFile, ending in head. */
export interface PrunedPrefix {
  seq: number;
  head: Uint8Array;
  throughFile: number;
}

/** The content of one store checkpoint. */
export interface StoreCheckpoint {
  origin: string;
  /** Entries chained. */
  size: number;
  /** Chain head after `size` entries. */
  hash: Uint8Array;
  /** When signed, ms since the epoch. */
  time: number;
  /** Data file holding entry `size`, or being written. */
  file: number;
  audit: AuditHead | null;
  pruned: PrunedPrefix | null;
}

const b64 = toBase64;
/** A 32-byte hash from canonical base64, or null. */
function unb64(text: string): Uint8Array | null {
  const bytes = fromBase64(text);
  return bytes?.length === 32 ? bytes : null;
}

/** The note text of a checkpoint. */
export function checkpointText(c: StoreCheckpoint): string {
  const extensions = [`time ${new Date(c.time).toISOString()}`, `file ${c.file}`];
  if (c.audit) extensions.push(`audit ${c.audit.size} ${b64(c.audit.hash)}`);
  if (c.pruned) extensions.push(`pruned ${c.pruned.seq} ${b64(c.pruned.head)} ${c.pruned.throughFile}`);
  return formatCheckpoint({ origin: c.origin, size: c.size, hash: c.hash, extensions });
}

/**
 * Verifies a signed checkpoint and reads it.
 *
 * @throws {import("./signed_note.ts").NoteSignatureError} when not signed by `verifier`'s key
 * @throws {NoteError} when malformed
 */
export function readCheckpoint(signedNote: string, verifier: NoteVerifier): StoreCheckpoint {
  const c = parseCheckpoint(openNote(signedNote, verifier));
  const out: StoreCheckpoint = {
    origin: c.origin,
    size: c.size,
    hash: c.hash,
    time: NaN,
    file: 0,
    audit: null,
    pruned: null,
  };
  for (const line of c.extensions) {
    const [key, ...args] = line.split(" ");
    if (key === "time" && args.length === 1) out.time = Date.parse(args[0]!);
    else if (key === "file" && args.length === 1 && /^\d+$/.test(args[0]!)) out.file = Number(args[0]);
    else if (key === "audit" && args.length === 2 && /^\d+$/.test(args[0]!) && unb64(args[1]!)) {
      out.audit = { size: Number(args[0]), hash: unb64(args[1]!)! };
    } else if (
      key === "pruned" && args.length === 3 && /^\d+$/.test(args[0]!) && unb64(args[1]!) && /^\d+$/.test(args[2]!)
    ) {
      out.pruned = { seq: Number(args[0]), head: unb64(args[1]!)!, throughFile: Number(args[2]) };
    } else throw new NoteError(`unknown checkpoint extension line "${line}"`);
  }
  if (Number.isNaN(out.time)) throw new NoteError("checkpoint has no time line");
  return out;
}

/** The notes of a checkpoint log, with their line numbers. */
export interface CheckpointLogLines {
  notes: { line: number; note: string }[];
  /** Lines that are not `{"note": "..."}`. */
  malformed: number[];
  /** Whether the last line was cut short (a crash while writing it). */
  torn: boolean;
}

/** Splits checkpoint-log text into notes. */
export function parseCheckpointLog(text: string): CheckpointLogLines {
  const lines = text.split("\n");
  const torn = lines.at(-1) !== "";
  lines.pop();
  const notes: CheckpointLogLines["notes"] = [];
  const malformed: number[] = [];
  lines.forEach((line, i) => {
    try {
      const value = JSON.parse(line);
      if (typeof value?.note !== "string") throw new Error("no note");
      notes.push({ line: i + 1, note: value.note });
    } catch {
      malformed.push(i + 1);
    }
  });
  return { notes, malformed, torn };
}

/** Raised at start-up when the checkpoint copy directory cannot be made. */
export class CheckpointCopyError extends Error {
  override name = "CheckpointCopyError";
}

/** Options for {@linkcode Checkpointer.open}. */
export interface CheckpointerOptions {
  dir: string;
  /** Second place every checkpoint is written to. */
  copyDir?: string;
  signer: NoteSigner;
  origin: string;
  /** Whether to fsync each checkpoint (off only with --fsync off). */
  sync: boolean;
  now?: () => number;
  log?: (message: string) => void;
}

/** Signs and stores checkpoints, one at a time. */
export class Checkpointer {
  readonly #options: CheckpointerOptions;
  readonly #file: Deno.FsFile;
  #last: StoreCheckpoint | null;
  #chain: Promise<unknown> = Promise.resolve();
  #copyFailures = 0;
  #written = 0;

  private constructor(options: CheckpointerOptions, file: Deno.FsFile, last: StoreCheckpoint | null) {
    this.#options = options;
    this.#file = file;
    this.#last = last;
  }

  /**
   * Opens the checkpoint log (creating it), cutting a torn last line, and
   * reads the latest checkpoint, whose pruned prefix later ones carry on.
   */
  static async open(options: CheckpointerOptions): Promise<Checkpointer> {
    const path = join(options.dir, CHECKPOINT_LOG_NAME);
    let text = "";
    try {
      text = await Deno.readTextFile(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    const parsed = parseCheckpointLog(text);
    let last: StoreCheckpoint | null = null;
    const latest = parsed.notes.at(-1);
    if (latest) {
      try {
        last = readCheckpoint(latest.note, parseVerifierKey(options.signer.verifierKey));
      } catch (err) {
        options.log?.(
          `${CHECKPOINT_LOG_NAME} line ${latest.line}: the latest checkpoint does not verify with the signing key ` +
            `(${(err as Error).message}); a retention record in it is not carried on`,
        );
      }
    }
    const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
    const valid = parsed.torn ? text.lastIndexOf("\n") + 1 : text.length;
    const validBytes = new TextEncoder().encode(text.slice(0, valid)).length;
    await file.truncate(validBytes);
    await file.seek(validBytes, Deno.SeekMode.Start);
    if (options.copyDir) {
      try {
        await Deno.mkdir(options.copyDir, { recursive: true, mode: 0o700 });
      } catch (err) {
        file.close();
        throw new CheckpointCopyError(
          `cannot use the checkpoint copy directory ${options.copyDir}: ${(err as Error).message}`,
        );
      }
    }
    return new Checkpointer(options, file, last);
  }

  /** The latest checkpoint written or found at open. */
  get last(): StoreCheckpoint | null {
    return this.#last;
  }

  /** Checkpoints written by this process. */
  get written(): number {
    return this.#written;
  }

  /** Writes to the copy directory that failed. */
  get copyFailures(): number {
    return this.#copyFailures;
  }

  /**
   * Signs and writes a checkpoint of `chain` (in the data file `file`) and
   * `audit`; `pruned` records a retention deletion and is carried on by
   * every later checkpoint. Checkpoints are written in call order.
   */
  write(chain: ChainState, file: number, audit: AuditHead | null, pruned?: PrunedPrefix): Promise<StoreCheckpoint> {
    const next = this.#chain.then(() => this.#write(chain, file, audit, pruned));
    this.#chain = next.catch(() => {});
    return next;
  }

  async #write(
    chain: ChainState,
    file: number,
    audit: AuditHead | null,
    pruned: PrunedPrefix | undefined,
  ): Promise<StoreCheckpoint> {
    const o = this.#options;
    const checkpoint: StoreCheckpoint = {
      origin: o.origin,
      size: chain.seq,
      hash: chain.head,
      time: (o.now ?? Date.now)(),
      file,
      audit,
      pruned: pruned ?? this.#last?.pruned ?? null,
    };
    const note = o.signer.sign(checkpointText(checkpoint));
    const line = new TextEncoder().encode(JSON.stringify({ note }) + "\n");
    await writeAll(this.#file, line);
    if (o.sync) await this.#file.syncData();
    this.#last = checkpoint;
    this.#written++;
    if (o.copyDir) {
      try {
        await appendSynced(join(o.copyDir, CHECKPOINT_LOG_NAME), line);
        const tmp = join(o.copyDir, LATEST_CHECKPOINT_NAME + ".tmp");
        await Deno.writeTextFile(tmp, note, { mode: 0o644 });
        await Deno.rename(tmp, join(o.copyDir, LATEST_CHECKPOINT_NAME));
        await syncDir(o.copyDir);
      } catch (err) {
        this.#copyFailures++;
        o.log?.(`checkpoint copy to ${o.copyDir} failed: ${(err as Error).message}`);
      }
    }
    return checkpoint;
  }

  /** Waits for checkpoints being written, then closes the log. */
  async close(): Promise<void> {
    await this.#chain;
    this.#file.close();
  }
}

async function appendSynced(path: string, bytes: Uint8Array): Promise<void> {
  const f = await Deno.open(path, { append: true, create: true, mode: 0o644 });
  try {
    await writeAll(f, bytes);
    await f.syncData();
  } finally {
    f.close();
  }
}
