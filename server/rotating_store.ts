/**
 * Append-only storage of entries as JSON lines in rotating files
 * `tlslog-00000001.jsonl`, `tlslog-00000002.jsonl`, ... whose names sort in
 * write order, across restarts too. Appends from every connection are queued
 * and written together; each append's promise settles once its bytes are in
 * the file.
 *
 * @module
 */
import { join } from "node:path";

/** Options for {@linkcode RotatingStore.open}. */
export interface RotatingStoreOptions {
  /** Directory of the data files; created when missing. */
  dir: string;
  /** Entries per file before a new one is started. */
  rotateEntries: number;
  /** Called with the path of each file created. */
  onFileCreated?: (path: string) => void;
}

/** Raised when the store is used after close or the options are invalid. */
export class StoreError extends Error {
  override name = "StoreError";
}

const FILE_PATTERN = /^tlslog-(\d{8,})\.jsonl$/;
const NEWLINE = 0x0a;

/** Name of data file number `index`. */
export function dataFileName(index: number): string {
  return `tlslog-${String(index).padStart(8, "0")}.jsonl`;
}

/** Data files of `dir` in write order. */
export async function listDataFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && FILE_PATTERN.test(e.name)) names.push(e.name);
  }
  return names.sort((a, b) => fileIndex(a) - fileIndex(b));
}

function fileIndex(name: string): number {
  return Number(FILE_PATTERN.exec(name)?.[1] ?? 0);
}

/**
 * Offset just past the `n`-th newline of `data` (n >= 1), or -1 when `data`
 * holds fewer newlines.
 */
export function offsetAfterLines(data: Uint8Array, n: number): number {
  let at = -1;
  for (let i = 0; i < n; i++) {
    at = data.indexOf(NEWLINE, at + 1);
    if (at === -1) return -1;
  }
  return at + 1;
}

interface PendingAppend {
  data: Uint8Array;
  count: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** The rotating JSON-lines store. */
export class RotatingStore {
  readonly #options: RotatingStoreOptions;
  #nextIndex: number;
  #file: Deno.FsFile | null = null;
  #fileName: string | null = null;
  #entriesInFile = 0;
  #queue: PendingAppend[] = [];
  #flushing: Promise<void> | null = null;
  #closed = false;

  private constructor(options: RotatingStoreOptions, nextIndex: number) {
    this.#options = options;
    this.#nextIndex = nextIndex;
  }

  /** Opens the store in `options.dir`, continuing the numbering of files already there. */
  static async open(options: RotatingStoreOptions): Promise<RotatingStore> {
    if (!Number.isInteger(options.rotateEntries) || options.rotateEntries < 1) {
      throw new StoreError(`rotate-entries must be a positive integer, got ${options.rotateEntries}`);
    }
    // Stored logs are sensitive: owner-only unless the directory already exists with other modes.
    await Deno.mkdir(options.dir, { recursive: true, mode: 0o700 });
    const existing = await listDataFiles(options.dir);
    const last = existing.at(-1);
    return new RotatingStore(options, last ? fileIndex(last) + 1 : 1);
  }

  /** Name of the file being written, or null before the first entry. */
  get currentFile(): string | null {
    return this.#fileName;
  }

  /**
   * Appends `count` entries given as newline-terminated JSON lines. Resolves
   * once they are written to the data files.
   */
  append(data: Uint8Array, count: number): Promise<void> {
    if (this.#closed) return Promise.reject(new StoreError("store is closed"));
    return new Promise((resolve, reject) => {
      this.#queue.push({ data, count, resolve, reject });
      this.#flushing ??= this.#flush();
    });
  }

  async #flush(): Promise<void> {
    // Let appends made in the same turn of the event loop join this write.
    await Promise.resolve();
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      try {
        for (const item of batch) await this.#write(item.data, item.count);
        for (const item of batch) item.resolve();
      } catch (err) {
        for (const item of batch) item.reject(err);
      }
    }
    this.#flushing = null;
  }

  async #write(data: Uint8Array, count: number): Promise<void> {
    let rest = data;
    let left = count;
    while (left > 0) {
      if (this.#file === null || this.#entriesInFile >= this.#options.rotateEntries) await this.#rotate();
      const room = this.#options.rotateEntries - this.#entriesInFile;
      const take = Math.min(room, left);
      const end = take === left ? rest.length : offsetAfterLines(rest, take);
      await writeAll(this.#file!, rest.subarray(0, end));
      this.#entriesInFile += take;
      left -= take;
      rest = rest.subarray(end);
    }
  }

  async #rotate(): Promise<void> {
    this.#file?.close();
    const name = dataFileName(this.#nextIndex++);
    const path = join(this.#options.dir, name);
    this.#file = await Deno.open(path, { createNew: true, write: true, mode: 0o600 });
    this.#fileName = name;
    this.#entriesInFile = 0;
    this.#options.onFileCreated?.(path);
  }

  /** Resolves once every append queued before this call is written. */
  barrier(): Promise<void> {
    return this.append(new Uint8Array(0), 0);
  }

  /** Waits for queued appends, then closes the current file. */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#flushing) await this.#flushing;
    this.#file?.close();
    this.#file = null;
  }
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}
