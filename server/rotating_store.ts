/**
 * Append-only storage of entries as JSON lines in rotating files
 * `tlslog-00000001.jsonl`, `tlslog-00000002.jsonl`, ... whose names sort in
 * write order, across restarts too.
 *
 * Group commit: appends from every connection queue up while the previous
 * group is being written; the next group writes them all, syncs once (in
 * `fsync: "batch"` mode), records the commit (data position and stream
 * progress, see commit_log.ts) and only then settles their promises. So one
 * fsync covers every batch that arrived meanwhile, and an acknowledged batch
 * is on stable storage together with the record that it was stored.
 *
 * @module
 */
import { join } from "node:path";
import { CommitLog, type CommitPosition, syncDir, writeAll } from "./commit_log.ts";

/** When data reaches stable storage before an ack. */
export type FsyncMode =
  | { kind: "batch" }
  | { kind: "interval"; ms: number }
  | { kind: "off" };

/** Options for {@linkcode RotatingStore.open}. */
export interface RotatingStoreOptions {
  /** Directory of the data files; created (mode 0700) when missing. */
  dir: string;
  /** Entries per file before a new one is started. */
  rotateEntries: number;
  /** Bytes per file before a new one is started (checked between batches' entries). Default: no limit. */
  rotateBytes?: number;
  /**
   * `batch` (default): fsync data and commit record before acknowledging.
   * `interval`: acknowledge after the write, fsync every `ms`.
   * `off`: leave flushing to the OS.
   */
  fsync?: FsyncMode;
  /** Called with the path of each file created. */
  onFileCreated?: (path: string) => void;
  /** Called after each fsync of a data file. */
  onSync?: () => void;
  /** Recovery notices. */
  log?: (message: string) => void;
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

/** Stream progress carried by an append: this batch of `stream` has number `seq`. */
export interface StreamProgress {
  stream: string;
  seq: number;
}

interface PendingAppend {
  data: Uint8Array;
  count: number;
  progress?: StreamProgress;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** The rotating JSON-lines store. */
export class RotatingStore {
  readonly #options: RotatingStoreOptions;
  readonly #fsync: FsyncMode;
  readonly #commits: CommitLog;
  readonly #streams: ReadonlyMap<string, number>;
  #nextIndex: number;
  #fileIndex = 0;
  #file: Deno.FsFile | null = null;
  #fileName: string | null = null;
  #entriesInFile = 0;
  #bytesInFile = 0;
  #queue: PendingAppend[] = [];
  #flushing: Promise<void> | null = null;
  #closed = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #dirty = false;
  /** Where committed data ends: the position a commit names before this run opens a file. */
  #committed: CommitPosition;
  /** Set when a write failed: what is in the file no longer matches what is counted. */
  #failed: Error | null = null;
  #lastSyncMs = Date.now();

  private constructor(
    options: RotatingStoreOptions,
    nextIndex: number,
    commits: CommitLog,
    streams: Map<string, number>,
    committed: CommitPosition,
  ) {
    this.#options = options;
    this.#committed = committed;
    this.#fsync = options.fsync ?? { kind: "batch" };
    this.#nextIndex = nextIndex;
    this.#commits = commits;
    this.#streams = streams;
    if (this.#fsync.kind === "interval") {
      this.#timer = setInterval(() => this.#syncInBackground(), this.#fsync.ms);
    }
  }

  /**
   * Opens the store in `options.dir`. Data past the last commit record was
   * never acknowledged: it is cut off (and files begun after it removed), so
   * what the senders resend is stored exactly once. Writing continues in a
   * new file after the highest one present.
   */
  static async open(options: RotatingStoreOptions): Promise<RotatingStore> {
    if (!Number.isInteger(options.rotateEntries) || options.rotateEntries < 1) {
      throw new StoreError(`rotate-entries must be a positive integer, got ${options.rotateEntries}`);
    }
    if (options.rotateBytes !== undefined && (!Number.isInteger(options.rotateBytes) || options.rotateBytes < 1)) {
      throw new StoreError(`rotate-bytes must be a positive integer, got ${options.rotateBytes}`);
    }
    // Stored logs are sensitive: owner-only unless the directory already exists with other modes.
    await Deno.mkdir(options.dir, { recursive: true, mode: 0o700 });
    const { log: commits, state, existed } = await CommitLog.open(options.dir);
    let names = await listDataFiles(options.dir);
    let committed = state.position;
    if (!existed && names.length > 0) {
      // Files from before the commit log: adopt them whole as committed.
      const last = names.at(-1)!;
      committed = { file: fileIndex(last), offset: (await Deno.stat(join(options.dir, last))).size };
      await commits.commit(committed, new Map(), true);
      options.log?.(`adopted ${names.length} data files written before the commit log`);
    } else {
      await cutUncommitted(options.dir, names, committed, options.log ?? (() => {}));
      names = await listDataFiles(options.dir);
    }
    const last = names.at(-1);
    return new RotatingStore(
      options,
      last ? fileIndex(last) + 1 : 1,
      commits,
      state.streams,
      committed ?? { file: 0, offset: 0 },
    );
  }

  /** Highest stored batch sequence per stream, as recovered at open. */
  get recoveredStreams(): ReadonlyMap<string, number> {
    return this.#streams;
  }

  /** Name of the file being written, or null before the first entry. */
  get currentFile(): string | null {
    return this.#fileName;
  }

  /**
   * Appends `count` entries given as newline-terminated JSON lines, with the
   * stream progress they represent. Resolves once they are written and
   * committed (and synced, in batch mode).
   */
  append(data: Uint8Array, count: number, progress?: StreamProgress): Promise<void> {
    if (this.#closed) return Promise.reject(new StoreError("store is closed"));
    if (this.#failed) return Promise.reject(new StoreError(`store failed earlier: ${this.#failed.message}`));
    return new Promise((resolve, reject) => {
      this.#queue.push({ data, count, progress, resolve, reject });
      this.#flushing ??= this.#flush();
    });
  }

  /** Resolves once every append queued before this call is committed. */
  barrier(): Promise<void> {
    return this.append(new Uint8Array(0), 0);
  }

  async #flush(): Promise<void> {
    // Let appends made in the same turn of the event loop join this group.
    await Promise.resolve();
    while (this.#queue.length > 0) {
      const group = this.#queue;
      this.#queue = [];
      try {
        const streams = new Map<string, number>();
        let wrote = false;
        for (const item of group) {
          if (item.count > 0) {
            await this.#write(item.data, item.count);
            wrote = true;
          }
          if (item.progress) streams.set(item.progress.stream, item.progress.seq);
        }
        if (wrote || streams.size > 0) {
          const batch = this.#fsync.kind === "batch";
          if (batch && this.#file && wrote) {
            await this.#file.syncData();
            this.#options.onSync?.();
          }
          const position = this.#position();
          await this.#commits.commit(position, streams, batch);
          this.#committed = position;
          this.#dirty = !batch;
          // Under steady load the interval timer never finds the store idle: sync here when due.
          const fsync = this.#fsync;
          if (fsync.kind === "interval" && Date.now() - this.#lastSyncMs >= fsync.ms) await this.#syncNow();
        }
        for (const item of group) item.resolve();
      } catch (err) {
        // Bytes may be in the file that no commit describes: refuse further writes; a restart
        // cuts the file back to the last commit and the senders resend.
        this.#failed = err instanceof Error ? err : new Error(String(err));
        this.#options.log?.(`store write failed; refusing further writes until restart: ${this.#failed.message}`);
        for (const item of [...group, ...this.#queue.splice(0)]) item.reject(err);
      }
    }
    this.#flushing = null;
  }

  #position(): CommitPosition {
    return this.#file === null ? this.#committed : { file: this.#fileIndex, offset: this.#bytesInFile };
  }

  async #write(data: Uint8Array, count: number): Promise<void> {
    let rest = data;
    let left = count;
    const maxBytes = this.#options.rotateBytes ?? Infinity;
    while (left > 0) {
      if (this.#file === null || this.#entriesInFile >= this.#options.rotateEntries || this.#bytesInFile >= maxBytes) {
        await this.#rotate();
      }
      let take = Math.min(this.#options.rotateEntries - this.#entriesInFile, left);
      let end = take === left ? rest.length : offsetAfterLines(rest, take);
      if (this.#bytesInFile + end > maxBytes && take > 1) {
        // Fill up to the size limit, at least one entry per file.
        take = Math.max(1, countLinesWithin(rest, maxBytes - this.#bytesInFile, take));
        end = offsetAfterLines(rest, take);
      }
      await writeAll(this.#file!, rest.subarray(0, end));
      this.#entriesInFile += take;
      this.#bytesInFile += end;
      left -= take;
      rest = rest.subarray(end);
    }
  }

  async #rotate(): Promise<void> {
    if (this.#file) {
      if (this.#fsync.kind !== "off") await this.#file.syncData();
      this.#file.close();
    }
    this.#fileIndex = this.#nextIndex++;
    const name = dataFileName(this.#fileIndex);
    const path = join(this.#options.dir, name);
    this.#file = await Deno.open(path, { createNew: true, write: true, mode: 0o600 });
    // The new name must survive a crash as well as the bytes written into it.
    if (this.#fsync.kind === "batch") await syncDir(this.#options.dir);
    this.#fileName = name;
    this.#entriesInFile = 0;
    this.#bytesInFile = 0;
    this.#options.onFileCreated?.(path);
  }

  /** Syncs data before the commit record that describes it. */
  async #syncNow(): Promise<void> {
    this.#dirty = false;
    this.#lastSyncMs = Date.now();
    await this.#file?.syncData();
    await this.#commits.sync();
    this.#options.onSync?.();
  }

  /** Set when the store stopped writing after a failure; the collector then reports itself unhealthy. */
  get failure(): Error | null {
    return this.#failed;
  }

  #syncInBackground(): void {
    if (!this.#dirty || this.#flushing) return;
    this.#flushing = this.#syncNow().catch((err) => this.#options.log?.(`fsync failed: ${(err as Error).message}`))
      .finally(() => {
        this.#flushing = null;
        if (this.#queue.length > 0) this.#flushing = this.#flush();
      });
  }

  /** Waits for queued appends, syncs, then closes the files. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    while (this.#flushing) await this.#flushing;
    if (this.#file && this.#fsync.kind !== "off") await this.#file.syncData();
    if (this.#fsync.kind !== "off") await this.#commits.sync();
    this.#file?.close();
    this.#file = null;
    this.#commits.close();
  }
}

/** How many of the first `max` lines of `data` fit within `bytes`. */
function countLinesWithin(data: Uint8Array, bytes: number, max: number): number {
  let n = 0;
  let at = -1;
  while (n < max) {
    const next = data.indexOf(NEWLINE, at + 1);
    if (next === -1 || next + 1 > bytes) break;
    at = next;
    n++;
  }
  return n;
}

/** Removes what was written after the last commit: it was never acknowledged. */
async function cutUncommitted(
  dir: string,
  names: string[],
  position: CommitPosition | null,
  log: (message: string) => void,
): Promise<void> {
  for (const name of names) {
    const index = fileIndex(name);
    const path = join(dir, name);
    if (position === null || index > position.file) {
      const { size } = await Deno.stat(path);
      await Deno.remove(path);
      log(`recovery: removed ${name} (${size} bytes written after the last commit; senders resend it)`);
    } else if (index === position.file) {
      const { size } = await Deno.stat(path);
      if (size > position.offset) {
        const file = await Deno.open(path, { write: true });
        try {
          await file.truncate(position.offset);
          await file.syncData();
        } finally {
          file.close();
        }
        log(`recovery: cut ${size - position.offset} uncommitted bytes from the end of ${name}; senders resend them`);
      }
    }
  }
  await syncDir(dir);
}
