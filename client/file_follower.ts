/**
 * Following a growing log file like `tail -F`: reading what is appended,
 * surviving rotation (renamed away and recreated) and truncation
 * (copytruncate), and resuming from a saved position without skipping or
 * repeating lines.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * for await (const chunk of followLines("/var/log/app.log", { signal: ac.signal })) {
 *   await ship(chunk.lines);
 *   await save(chunk.position); // restart later with { startAt: position }
 * }
 * ```
 *
 * @module
 */
import { dirname, join } from "node:path";
import { concatBytes } from "../shared/bytes.ts";

/** Where reading stands: which file (by inode) and the byte offset after the last complete line yielded. */
export interface FollowPosition {
  ino: number;
  offset: number;
}

/** Lines read from one file, with the position to resume after them. */
export interface FollowChunk {
  /** Complete lines (without "\n" or "\r\n"). */
  lines: string[];
  /** Position just after the last of these lines; saving it and restarting there repeats nothing. */
  position: FollowPosition;
  /** Path the lines were read from (the followed path, or the rotated file's path when draining it). */
  source: string;
  /**
   * 1-based line number of `lines[0]` within that file. When reading starts
   * in the middle of a file (a resume, or `from: "end"`), the lines before
   * the start are counted once by scanning the file from its beginning. After
   * a truncation the count restarts at 1.
   */
  firstLine: number;
}

/** Options for {@linkcode followLines}. */
export interface FollowOptions {
  /**
   * Resume here. When the file at `path` has this inode, reading continues at
   * `offset`. When it does not (the file was rotated while we were stopped),
   * the file with that inode in the same directory (e.g. `app.log.1`) is
   * drained from `offset` to its end first, then the current file is read
   * from 0. If there is no such file, the current file is read from 0 and the
   * gap is reported through `onNotice`.
   */
  startAt?: FollowPosition;
  /**
   * Without `startAt`: start at the end of the file ("end", like `tail -F -n0`)
   * or its beginning ("start"). With "end", an unterminated last line is not
   * skipped: it is yielded whole once its newline arrives. Only applies to the
   * file found at `path` when following starts; a file that appears later, or
   * replaces it, is read from 0. Default "start".
   */
  from?: "start" | "end";
  /** How often to poll for growth, rotation and truncation, in milliseconds. Default 200. */
  pollMs?: number;
  /** Stops following; the generator returns after yielding what it has. */
  signal?: AbortSignal;
  /**
   * Max bytes read per chunk. Default 4 MiB. A line longer than this is
   * gathered across reads, so memory grows with the longest line.
   */
  chunkBytes?: number;
  /**
   * Notices: "following …", "waiting for … to appear", "truncated: …",
   * "rotated: draining …", "rotated while stopped: draining …", "gap: …".
   */
  onNotice?: (message: string) => void;
}

/** An option of {@linkcode followLines} out of its range. */
export class InvalidFollowOptionError extends RangeError {
  override name = "InvalidFollowOptionError";
}

/** The platform reports no inode for a file, so rotation cannot be detected. */
export class InodeUnavailableError extends Error {
  override name = "InodeUnavailableError";
}

const DEFAULT_CHUNK_BYTES = 4 << 20;
const DEFAULT_POLL_MS = 200;
const NEWLINE = 0x0a;

/**
 * Follows the file at `path` like `tail -F`, yielding its complete lines in
 * chunks of at most `chunkBytes` bytes read.
 *
 * While a file is the live one at `path`, only lines ending in "\n" are
 * yielded; a partial last line waits for its newline. When `path` gets a
 * different inode (rotation), the old file, still open, is drained to its end,
 * including a final unterminated line, then the new file is read from 0. When
 * the file becomes shorter than what was read (truncation), reading restarts
 * at 0. A missing file is waited for. A truncation that is followed, before
 * the next poll, by writes beyond the old size goes unnoticed, as with
 * `tail -F`.
 *
 * Polls every `pollMs`; stop it with `signal` (breaking out of `for await`
 * also works, as the generator is then waiting at a `yield`). Every file
 * handle is closed when it returns.
 */
export async function* followLines(path: string, options: FollowOptions = {}): AsyncGenerator<FollowChunk> {
  const follower = new Follower(path, options);
  try {
    yield* follower.run();
  } finally {
    follower.closeAll();
  }
}

/** A file being read. */
interface Reading {
  file: Deno.FsFile;
  ino: number;
  /** Path reported as `source`. */
  source: string;
  /** Bytes of the file read so far, `carry` included. */
  readPos: number;
  /** Bytes after the last newline read, waiting for the end of their line. */
  carry: Uint8Array;
  /** Number of the next line to yield. */
  lineNo: number;
}

class Follower {
  readonly #path: string;
  readonly #startAt?: FollowPosition;
  readonly #from: "start" | "end";
  readonly #pollMs: number;
  readonly #signal?: AbortSignal;
  readonly #notice: (message: string) => void;
  readonly #buf: Uint8Array;
  readonly #decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  readonly #handles = new Set<Deno.FsFile>();

  constructor(path: string, options: FollowOptions) {
    const { chunkBytes = DEFAULT_CHUNK_BYTES, pollMs = DEFAULT_POLL_MS, from = "start" } = options;
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) {
      throw new InvalidFollowOptionError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
    }
    if (!Number.isFinite(pollMs) || pollMs < 0) {
      throw new InvalidFollowOptionError(`pollMs must be a finite number >= 0, got ${pollMs}`);
    }
    if (from !== "start" && from !== "end") {
      throw new InvalidFollowOptionError(`from must be "start" or "end", got ${JSON.stringify(from)}`);
    }
    this.#path = path;
    this.#startAt = options.startAt;
    this.#from = from;
    this.#pollMs = pollMs;
    this.#signal = options.signal;
    this.#notice = options.onNotice ?? (() => {});
    this.#buf = new Uint8Array(chunkBytes);
  }

  async *run(): AsyncGenerator<FollowChunk, void> {
    let cur = this.#startAt ? yield* this.#resume(this.#startAt) : await this.#begin();
    let waiting = false;
    while (!this.#signal?.aborted) {
      if (!cur) {
        cur = await this.#openLive();
        if (!cur) {
          if (!waiting) this.#notice(`waiting for ${this.#path} to appear`);
          waiting = true;
          await pause(this.#pollMs, this.#signal);
          continue;
        }
        waiting = false;
      }
      const live = await statOrNull(this.#path);
      if (live && inodeOf(live, this.#path) !== cur.ino) {
        cur.source = (await this.#findByInode(cur.ino)) ?? cur.source;
        this.#notice(`rotated: draining ${cur.source}`);
        yield* this.#drain(cur);
        this.#close(cur.file);
        cur = undefined;
        continue;
      }
      const { size } = await cur.file.stat();
      if (size < cur.readPos) {
        this.#notice(`truncated: ${cur.source} is ${size} bytes, less than the ${cur.readPos} read; restarting at 0`);
        await this.#seek(cur, 0, 1);
      }
      const step = await this.#read(cur);
      if (step === "eof") await pause(this.#pollMs, this.#signal);
      else if (step !== "partial") yield step;
    }
  }

  closeAll(): void {
    for (const file of this.#handles) file.close();
    this.#handles.clear();
  }

  /** Opens the file at the path without a saved position. */
  async #begin(): Promise<Reading | undefined> {
    if (this.#from === "start") return await this.#openLive();
    const opened = await this.#openFile(this.#path);
    if (!opened) return undefined;
    const { lines, lastEnd } = await this.#scan(opened.reading.file, opened.size);
    await this.#seek(opened.reading, lastEnd, lines + 1);
    this.#notice(`following ${this.#path} (inode ${opened.reading.ino}) from byte ${lastEnd}`);
    return opened.reading;
  }

  /** Picks up at `at`, draining the rotated file first when `path` is no longer it. */
  async *#resume(at: FollowPosition): AsyncGenerator<FollowChunk, Reading | undefined> {
    const current = await this.#openFile(this.#path);
    if (current?.reading.ino === at.ino) {
      const r = current.reading;
      let offset = at.offset;
      if (current.size < offset) {
        this.#notice(
          `truncated while stopped: ${r.source} is ${current.size} bytes, less than ${offset}; reading from 0`,
        );
        offset = 0;
      }
      await this.#seek(r, offset, (await this.#scan(r.file, offset)).lines + 1);
      this.#notice(`following ${this.#path} (inode ${r.ino}) from byte ${offset}`);
      return r;
    }
    const rotatedPath = await this.#findByInode(at.ino);
    const rotated = rotatedPath === undefined ? undefined : await this.#openFile(rotatedPath);
    if (rotated?.reading.ino === at.ino) {
      const r = rotated.reading;
      let offset = at.offset;
      if (rotated.size < offset) {
        this.#notice(
          `gap: ${r.source} is ${rotated.size} bytes, less than the saved offset ${offset}; draining from 0`,
        );
        offset = 0;
      } else {
        this.#notice(`rotated while stopped: draining ${r.source} from byte ${offset}`);
      }
      await this.#seek(r, offset, (await this.#scan(r.file, offset)).lines + 1);
      yield* this.#drain(r);
      this.#close(r.file);
    } else {
      if (rotated) this.#close(rotated.reading.file);
      this.#notice(
        `gap: no file with inode ${at.ino} in ${dirname(this.#path)}; ` +
          `what was written to it after byte ${at.offset} is lost; reading ${this.#path} from 0`,
      );
    }
    if (current) this.#notice(`following ${this.#path} (inode ${current.reading.ino}) from byte 0`);
    return current?.reading;
  }

  /** Opens the file at the path, to be read from its beginning. */
  async #openLive(): Promise<Reading | undefined> {
    const opened = await this.#openFile(this.#path);
    if (opened) this.#notice(`following ${this.#path} (inode ${opened.reading.ino}) from byte 0`);
    return opened?.reading;
  }

  /** Reads a file no longer at the path to its end, its last unterminated line included. */
  async *#drain(r: Reading): AsyncGenerator<FollowChunk, void> {
    while (true) {
      if (this.#signal?.aborted) return;
      const step = await this.#read(r);
      if (step === "eof") break;
      if (step !== "partial") yield step;
    }
    if (r.carry.length === 0) return;
    const line = stripCr(this.#decoder.decode(r.carry));
    r.carry = new Uint8Array(0);
    yield { lines: [line], position: { ino: r.ino, offset: r.readPos }, source: r.source, firstLine: r.lineNo++ };
  }

  /**
   * Reads up to `chunkBytes` more bytes: the complete lines they end, or
   * "partial" when they end none, or "eof" when there was nothing to read.
   */
  async #read(r: Reading): Promise<FollowChunk | "partial" | "eof"> {
    const n = await r.file.read(this.#buf);
    if (n === null || n === 0) return "eof";
    r.readPos += n;
    const bytes = concatBytes([r.carry, this.#buf.subarray(0, n)]);
    const end = bytes.lastIndexOf(NEWLINE) + 1;
    r.carry = bytes.slice(end);
    if (end === 0) return "partial";
    const lines = this.#decoder.decode(bytes.subarray(0, end - 1)).split("\n").map(stripCr);
    const chunk = {
      lines,
      position: { ino: r.ino, offset: r.readPos - r.carry.length },
      source: r.source,
      firstLine: r.lineNo,
    };
    r.lineNo += lines.length;
    return chunk;
  }

  /** Counts the lines ending before `limit`, and where the last of them ends. */
  async #scan(file: Deno.FsFile, limit: number): Promise<{ lines: number; lastEnd: number }> {
    await file.seek(0, Deno.SeekMode.Start);
    let pos = 0;
    let lines = 0;
    let lastEnd = 0;
    while (pos < limit) {
      const n = await file.read(this.#buf.subarray(0, Math.min(this.#buf.length, limit - pos)));
      if (n === null || n === 0) break;
      const view = this.#buf.subarray(0, n);
      for (let i = view.indexOf(NEWLINE); i !== -1; i = view.indexOf(NEWLINE, i + 1)) {
        lines++;
        lastEnd = pos + i + 1;
      }
      pos += n;
    }
    return { lines, lastEnd };
  }

  async #seek(r: Reading, offset: number, lineNo: number): Promise<void> {
    await r.file.seek(offset, Deno.SeekMode.Start);
    r.readPos = offset;
    r.carry = new Uint8Array(0);
    r.lineNo = lineNo;
  }

  /** Opens `path` for reading at 0, with its inode and size as of opening; undefined when it does not exist. */
  async #openFile(path: string): Promise<{ reading: Reading; size: number } | undefined> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
    this.#handles.add(file);
    try {
      const info = await file.stat();
      const reading = { file, ino: inodeOf(info, path), source: path, readPos: 0, carry: new Uint8Array(0), lineNo: 1 };
      return { reading, size: info.size };
    } catch (err) {
      this.#close(file);
      throw err;
    }
  }

  #close(file: Deno.FsFile): void {
    this.#handles.delete(file);
    file.close();
  }

  /** The path of the file with inode `ino` in the followed file's directory, if any. */
  async #findByInode(ino: number): Promise<string | undefined> {
    const dir = dirname(this.#path);
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile) continue;
      const candidate = join(dir, entry.name);
      const info = await statOrNull(candidate);
      if (info?.ino === ino) return candidate;
    }
    return undefined;
  }
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

function inodeOf(info: Deno.FileInfo, path: string): number {
  if (info.ino === null) throw new InodeUnavailableError(`no inode reported for ${path}; cannot follow rotations`);
  return info.ino;
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/** Resolves after `ms`, or at once when `signal` aborts; leaves no timer behind. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
