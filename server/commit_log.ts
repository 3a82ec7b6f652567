/**
 * The store's commit log: after each group of appends is written (and, in
 * `--fsync batch` mode, synced), one record notes where the data ends and the
 * highest batch sequence stored for each stream that wrote in the group. The
 * record is what makes a write count: on start-up, data past the last record
 * was never acknowledged and is cut off (the sender resends it), and the
 * stream progress comes back, so a resent batch is not stored twice, across
 * a SIGKILL too.
 *
 * Format: one JSON object per line,
 * `{"file":7,"offset":12345,"streams":{"<stream id>":42},"seq":1234,"head":"<hex>"}`
 * where `seq` and `head` are the entry hash chain's state at that position
 * (see entry_chain.ts). A torn last line (a crash mid-write) is ignored;
 * damage before it is an error.
 *
 * @module
 */
import { join } from "node:path";
import { writeAll } from "../shared/bytes.ts";
import { type ChainState, fromHex, toHex } from "./entry_chain.ts";

/** Name of the commit log inside the data directory. */
export const COMMIT_LOG_NAME = "tlslog-commits.log";

/** Where committed data ends. */
export interface CommitPosition {
  /** Index of the data file (tlslog-<index>.jsonl). */
  file: number;
  /** Bytes of that file that are committed. */
  offset: number;
}

/** What the log says after replay. */
export interface CommitState {
  /** Null when nothing was ever committed. */
  position: CommitPosition | null;
  /** Highest stored batch sequence per stream. */
  streams: Map<string, number>;
  /** The hash chain at the committed position; null in logs written before the chain. */
  chain: ChainState | null;
}

/** Raised when the commit log is damaged somewhere other than its last line. */
export class CommitLogCorruptError extends Error {
  override name = "CommitLogCorruptError";
}

/** Compact the log when it grows past this size. */
const COMPACT_BYTES = 4 << 20;
const encoder = new TextEncoder();

/**
 * Replays commit-log text. Returns the state and the byte length of the valid
 * prefix (a torn last line is excluded).
 *
 * @throws {CommitLogCorruptError} for a bad line that is not the last
 */
export function replayCommitLog(text: string): { state: CommitState; validBytes: number } {
  const state: CommitState = { position: null, streams: new Map(), chain: null };
  let validBytes = 0;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const terminated = i < lines.length - 1;
    if (line === "" && !terminated) break;
    let record: { file?: unknown; offset?: unknown; streams?: unknown; seq?: unknown; head?: unknown };
    try {
      record = JSON.parse(line);
      if (
        !terminated || !Number.isSafeInteger(record.file) || !Number.isSafeInteger(record.offset) ||
        typeof record.streams !== "object" || record.streams === null
      ) throw new Error("incomplete record");
    } catch (err) {
      // Only the last line may be torn: it was being written when the process stopped.
      const last = i === lines.length - 1 || (i === lines.length - 2 && lines[lines.length - 1] === "");
      if (last) break;
      throw new CommitLogCorruptError(`${COMMIT_LOG_NAME} line ${i + 1} is damaged: ${(err as Error).message}`);
    }
    state.position = { file: record.file as number, offset: record.offset as number };
    const head = typeof record.head === "string" ? fromHex(record.head) : null;
    if (Number.isSafeInteger(record.seq) && head) state.chain = { seq: record.seq as number, head };
    for (const [stream, seq] of Object.entries(record.streams as Record<string, number>)) {
      if (seq > (state.streams.get(stream) ?? 0)) state.streams.set(stream, seq);
    }
    validBytes += encoder.encode(line).length + 1;
  }
  return { state, validBytes };
}

/** Appends commit records; compacts itself when large. */
export class CommitLog {
  readonly #dir: string;
  readonly #path: string;
  #file: Deno.FsFile;
  #size: number;
  readonly #streams: Map<string, number>;

  private constructor(dir: string, file: Deno.FsFile, size: number, streams: Map<string, number>) {
    this.#dir = dir;
    this.#path = join(dir, COMMIT_LOG_NAME);
    this.#file = file;
    this.#size = size;
    this.#streams = streams;
  }

  /** Opens (creating) the log in `dir`, cuts a torn last line, and returns it with the replayed state. */
  static async open(dir: string): Promise<{ log: CommitLog; state: CommitState; existed: boolean }> {
    const path = join(dir, COMMIT_LOG_NAME);
    let text = "";
    let existed = true;
    try {
      text = await Deno.readTextFile(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      existed = false;
    }
    const { state, validBytes } = replayCommitLog(text);
    const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
    await file.truncate(validBytes);
    await file.seek(validBytes, Deno.SeekMode.Start);
    return { log: new CommitLog(dir, file, validBytes, new Map(state.streams)), state, existed };
  }

  /** Appends a record; `sync` makes it durable before returning. */
  async commit(
    position: CommitPosition,
    streams: Map<string, number>,
    sync: boolean,
    chain: ChainState,
  ): Promise<void> {
    for (const [s, seq] of streams) this.#streams.set(s, seq);
    if (this.#size > COMPACT_BYTES) return this.#compact(position, chain);
    const line = encodeRecord(position, streams, chain);
    await writeAll(this.#file, line);
    this.#size += line.length;
    if (sync) await this.#file.syncData();
  }

  /** Forces written records to stable storage. */
  async sync(): Promise<void> {
    await this.#file.syncData();
  }

  /** Rewrites the log as one record holding every stream, atomically (write, sync, rename, sync dir). */
  async #compact(position: CommitPosition, chain: ChainState): Promise<void> {
    const tmp = this.#path + ".tmp";
    const line = encodeRecord(position, this.#streams, chain);
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    await writeAll(file, line);
    await file.sync();
    await Deno.rename(tmp, this.#path);
    await syncDir(this.#dir);
    this.#file.close();
    this.#file = file;
    this.#size = line.length;
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}

function encodeRecord(position: CommitPosition, streams: Map<string, number>, chain: ChainState): Uint8Array {
  const record = { ...position, streams: Object.fromEntries(streams), seq: chain.seq, head: toHex(chain.head) };
  return encoder.encode(JSON.stringify(record) + "\n");
}

/** Makes a directory's entries (a new or renamed file) durable. */
export async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}
