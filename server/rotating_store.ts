/**
 * Append-only storage of entries as JSON lines in rotating files
 * `tlslog-00000001.jsonl`, `tlslog-00000002.jsonl`, ... whose names sort in
 * write order, across restarts too (store_files.ts lists every form a file
 * takes: compressed, encrypted).
 *
 * Group commit: appends from every connection queue up while the previous
 * group is being written; the next group writes them all, syncs once (in
 * `fsync: "batch"` mode), records the commit (data position, stream progress
 * and hash-chain head, see commit_log.ts) and only then settles their
 * promises. So one fsync covers every batch that arrived meanwhile, and an
 * acknowledged batch is on stable storage together with the record that it
 * was stored.
 *
 * Every committed entry is then linked into the hash chain (entry_chain.ts)
 * by the chainer (store_chainer.ts), behind the writer and off the ack path;
 * each data file has a chain file beside it. With an encryption key
 * each write is one AES-256-GCM record (sealed_file.ts).
 *
 * @module
 */
import { join } from "node:path";
import { writeAll } from "../shared/bytes.ts";
import { CommitLog, type CommitPosition, type CommitState, syncDir } from "./commit_log.ts";
import {
  chainFileName,
  ChainFormatError,
  chainLines,
  type ChainState,
  formatChainHeader,
  genesisState,
  parseChainFile,
  toHex,
} from "./entry_chain.ts";
import { type EncryptionKey, SealedWriter } from "./sealed_file.ts";
import { ChainHasher } from "./chain_hasher.ts";
import { StoreChainer } from "./store_chainer.ts";
import {
  dataFileName,
  isCompressedName,
  listStoreFiles,
  readStoreFile,
  readStoreText,
  type StoreFileSet,
} from "./store_files.ts";

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
  /** Encrypt data files with this key (AES-256-GCM). */
  encryptKey?: EncryptionKey;
  /** Hash the chain in a worker thread (chain_hasher.ts), in parallel with the main thread. Default false. */
  hashInWorker?: boolean;
  /** Called with the path of each file created. */
  onFileCreated?: (path: string) => void;
  /** Called with the number of each data file once it is closed and wholly committed. */
  onFileClosed?: (index: number) => void;
  /** Called after each fsync of a data file. */
  onSync?: () => void;
  /** Recovery notices. */
  log?: (message: string) => void;
}

/** Raised when the store is used after close, the options are invalid, or it cannot be recovered. */
export class StoreError extends Error {
  override name = "StoreError";
}

const NEWLINE = 0x0a;
export { dataFileName, listDataFiles } from "./store_files.ts";

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

/** The data file being written. */
interface OpenFile {
  index: number;
  name: string;
  data: Deno.FsFile;
  sealer: SealedWriter | null;
  entries: number;
  /** Plain bytes of entries (what --rotate-bytes counts). */
  plainBytes: number;
  /** Bytes in the file (what a commit position counts). */
  rawBytes: number;
}
/** The rotating JSON-lines store. */
export class RotatingStore {
  readonly #options: RotatingStoreOptions;
  readonly #fsync: FsyncMode;
  readonly #commits: CommitLog;
  readonly #streams: ReadonlyMap<string, number>;
  readonly #hasher: ChainHasher | null;
  readonly #chainer: StoreChainer;
  /** Chunks written in the group being committed, handed to the chainer after the commit. */
  #written: { index: number; data: Uint8Array }[] = [];
  #nextIndex: number;
  #file: OpenFile | null = null;
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
    chain: ChainState,
  ) {
    this.#options = options;
    this.#committed = committed;
    this.#fsync = options.fsync ?? { kind: "batch" };
    this.#nextIndex = nextIndex;
    this.#commits = commits;
    this.#streams = streams;
    this.#hasher = options.hashInWorker ? new ChainHasher() : null;
    this.#chainer = new StoreChainer({
      dir: options.dir,
      sync: this.#fsync.kind !== "off",
      hasher: this.#hasher,
      // A file's chain is complete once the chainer moved past it: the data file is closed and committed.
      onFileChained: (index) => options.onFileClosed?.(index),
    }, chain);
    if (this.#fsync.kind === "interval") {
      this.#timer = setInterval(() => this.#syncInBackground(), this.#fsync.ms);
    }
  }

  /**
   * Opens the store in `options.dir`. Data past the last commit record was
   * never acknowledged: it is cut off (and files begun after it removed), so
   * what the senders resend is stored exactly once. The chain file of the
   * last file is brought level with its data. Writing continues in a new file
   * after the highest one present.
   *
   * @throws {StoreError} when the last file's chain file disagrees with its data (altered while stopped)
   */
  static async open(options: RotatingStoreOptions): Promise<RotatingStore> {
    if (!Number.isInteger(options.rotateEntries) || options.rotateEntries < 1) {
      throw new StoreError(`rotate-entries must be a positive integer, got ${options.rotateEntries}`);
    }
    if (options.rotateBytes !== undefined && (!Number.isInteger(options.rotateBytes) || options.rotateBytes < 1)) {
      throw new StoreError(`rotate-bytes must be a positive integer, got ${options.rotateBytes}`);
    }
    const log = options.log ?? (() => {});
    const keys = options.encryptKey ? [options.encryptKey] : [];
    // Stored logs are sensitive: owner-only unless the directory already exists with other modes.
    await Deno.mkdir(options.dir, { recursive: true, mode: 0o700 });
    const { log: commits, state, existed } = await CommitLog.open(options.dir);
    try {
      return await RotatingStore.#recover(options, commits, state, existed, keys, log);
    } catch (err) {
      commits.close();
      throw err;
    }
  }

  /** Cuts what was never committed, levels or builds the chain, and makes the store. */
  static async #recover(
    options: RotatingStoreOptions,
    commits: CommitLog,
    state: CommitState,
    existed: boolean,
    keys: EncryptionKey[],
    log: (message: string) => void,
  ): Promise<RotatingStore> {
    let sets = await listStoreFiles(options.dir);
    let committed = state.position;
    let chain = state.chain;
    if (existed) {
      await cutUncommitted(options.dir, sets, committed, log);
      sets = await listStoreFiles(options.dir);
    }
    if ((!existed || (committed !== null && chain === null)) && sets.some((s) => s.data)) {
      // Files from before the commit log or the chain: adopt them whole (what is committed of them) and chain them.
      const last = sets.filter((s) => s.data).at(-1)!;
      if (!existed) {
        const raw = (await Deno.stat(join(options.dir, last.data!))).size;
        committed = { file: last.index, offset: raw };
        log(`adopted ${sets.length} data files written before the commit log`);
      }
      chain = await chainUnchained(options.dir, sets, keys, log);
      await commits.commit(committed!, new Map(), true, chain);
    } else {
      const level = await levelChainFiles(options.dir, sets, keys);
      if (level && chain && level.seq < chain.seq) {
        log(
          `recovery: the data ends at entry ${level.seq}, the commit log's chain at ${chain.seq}: ` +
            `data acknowledged without fsync was lost; the chain continues from what is stored`,
        );
      }
      chain = level ?? chain;
    }
    const last = sets.at(-1);
    return new RotatingStore(
      options,
      last ? last.index + 1 : 1,
      commits,
      state.streams,
      committed ?? { file: 0, offset: 0 },
      chain ?? genesisState(),
    );
  }

  /** Highest stored batch sequence per stream, as recovered at open. */
  get recoveredStreams(): ReadonlyMap<string, number> {
    return this.#streams;
  }

  /** Name of the file being written, or null before the first entry. */
  get currentFile(): string | null {
    return this.#file?.name ?? null;
  }

  /** Number of the data file being written, or the last one committed before it. */
  get currentIndex(): number {
    return this.#file?.index ?? this.#committed.file;
  }

  /** The hash chain as far as it is hashed: committed entries, minus what the chainer still has queued. */
  get chain(): ChainState {
    return this.#chainer.state;
  }

  /** Resolves when every committed entry is in the chain. */
  chained(): Promise<void> {
    return this.#chainer.idle();
  }

  /**
   * Appends `count` entries given as newline-terminated JSON lines, with the
   * stream progress they represent. Resolves once they are written and
   * committed (and synced, in batch mode).
   */
  append(data: Uint8Array, count: number, progress?: StreamProgress): Promise<void> {
    if (this.#closed) return Promise.reject(new StoreError("store is closed"));
    this.#failed ??= this.#chainer.failure;
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
        // Bounded: a chainer that cannot keep up holds the writer back.
        await this.#chainer.room();
        if (this.#chainer.failure) throw this.#chainer.failure;
        const streams = new Map<string, number>();
        let count = 0;
        // Written batch by batch, not joined: a group of many large batches is not copied whole.
        for (const item of group) {
          if (item.count > 0) {
            await this.#write(item.data, item.count);
            count += item.count;
          }
          if (item.progress) streams.set(item.progress.stream, item.progress.seq);
        }
        if (count > 0 || streams.size > 0) {
          const batch = this.#fsync.kind === "batch";
          if (batch && this.#file && count > 0) {
            await this.#file.data.syncData();
            this.#options.onSync?.();
          }
          const position = this.#position();
          await this.#commits.commit(position, streams, batch, this.#chainer.state);
          this.#committed = position;
          this.#dirty = !batch;
          for (const { index, data } of this.#written.splice(0)) this.#chainer.enqueue(index, data);
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
    return this.#file === null ? this.#committed : { file: this.#file.index, offset: this.#file.rawBytes };
  }

  async #write(data: Uint8Array, count: number): Promise<void> {
    let rest = data;
    let left = count;
    const maxBytes = this.#options.rotateBytes ?? Infinity;
    while (left > 0) {
      let file = this.#file;
      if (file === null || file.entries >= this.#options.rotateEntries || file.plainBytes >= maxBytes) {
        file = await this.#rotate();
      }
      let take = Math.min(this.#options.rotateEntries - file.entries, left);
      let end = take === left ? rest.length : offsetAfterLines(rest, take);
      if (file.plainBytes + end > maxBytes && take > 1) {
        // Fill up to the size limit, at least one entry per file.
        take = Math.max(1, countLinesWithin(rest, maxBytes - file.plainBytes, take));
        end = offsetAfterLines(rest, take);
      }
      const chunk = rest.subarray(0, end);
      const bytes = file.sealer ? await file.sealer.seal(chunk) : chunk;
      await writeAll(file.data, bytes);
      this.#written.push({ index: file.index, data: chunk });
      file.entries += take;
      file.plainBytes += end;
      file.rawBytes += bytes.length;
      left -= take;
      rest = rest.subarray(end);
    }
  }

  async #rotate(): Promise<OpenFile> {
    if (this.#file) await this.#closeFile(this.#file);
    const index = this.#nextIndex++;
    const dir = this.#options.dir;
    const key = this.#options.encryptKey;
    const name = dataFileName(index, { enc: key !== undefined });
    const path = join(dir, name);
    const data = await Deno.open(path, { createNew: true, write: true, mode: 0o600 });
    const sealer = key ? await SealedWriter.create(key) : null;
    if (sealer) await writeAll(data, sealer.header);
    // The new names must survive a crash as well as the bytes written into them.
    if (this.#fsync.kind === "batch") {
      await data.syncData();
      await syncDir(dir);
    }
    this.#file = {
      index,
      name,
      data,
      sealer,
      entries: 0,
      plainBytes: 0,
      rawBytes: sealer?.header.length ?? 0,
    };
    this.#options.onFileCreated?.(path);
    return this.#file;
  }

  async #closeFile(file: OpenFile): Promise<void> {
    if (this.#fsync.kind !== "off") await file.data.syncData();
    file.data.close();
    this.#file = null;
  }

  /** Syncs data before the commit record that describes it. */
  async #syncNow(): Promise<void> {
    this.#dirty = false;
    this.#lastSyncMs = Date.now();
    await this.#file?.data.syncData();
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

  /**
   * Waits for queued appends and for the chain to catch up, syncs, records
   * the final chain state in the commit log, then closes the files.
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    while (this.#flushing) await this.#flushing;
    const file = this.#file;
    if (file && this.#fsync.kind !== "off") await file.data.syncData();
    file?.data.close();
    this.#file = null;
    try {
      await this.#chainer.close();
      this.#hasher?.close();
      if (!this.#failed && !this.#chainer.failure) {
        await this.#commits.commit(this.#committed, new Map(), this.#fsync.kind !== "off", this.#chainer.state);
      } else if (this.#fsync.kind !== "off") await this.#commits.sync();
    } finally {
      this.#commits.close();
    }
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
  sets: StoreFileSet[],
  position: CommitPosition | null,
  log: (message: string) => void,
): Promise<void> {
  for (const set of sets) {
    const names = [set.data, set.chain, ...set.leftovers].filter((n): n is string => n !== null);
    if (position === null || set.index > position.file) {
      for (const name of names) {
        const { size } = await Deno.stat(join(dir, name));
        await Deno.remove(join(dir, name));
        if (name === set.data) {
          log(`recovery: removed ${name} (${size} bytes written after the last commit; senders resend it)`);
        }
      }
    } else if (set.index === position.file && set.data && !isCompressedName(set.data)) {
      const path = join(dir, set.data);
      const { size } = await Deno.stat(path);
      if (size > position.offset) {
        const file = await Deno.open(path, { write: true });
        try {
          await file.truncate(position.offset);
          await file.syncData();
        } finally {
          file.close();
        }
        log(
          `recovery: cut ${size - position.offset} uncommitted bytes from the end of ${set.data}; senders resend them`,
        );
      }
    }
  }
  await syncDir(dir);
}

/** Whether the file holds at least one newline-terminated line. */
async function hasCompleteLine(path: string): Promise<boolean> {
  const file = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await file.read(buf);
      if (n === null) return false;
      if (buf.subarray(0, n).includes(NEWLINE)) return true;
    }
  } finally {
    file.close();
  }
}

/** Where a parsed chain file ends: its last record, or its header's start when it has none. */
function chainEnd(chain: { prev: ChainState; records: { seq: number; hash: Uint8Array }[] }): ChainState {
  const last = chain.records.at(-1);
  return last ? { seq: last.seq, head: last.hash } : chain.prev;
}

async function readChainFile(dir: string, name: string) {
  try {
    return parseChainFile(await readStoreText(dir, name), name);
  } catch (err) {
    if (err instanceof ChainFormatError) throw new StoreError(`${err.message}; run "tlslog verify"`);
    throw err;
  }
}

/**
 * Brings the chain files of the uncompressed data files level with their data
 * after a crash: the chainer runs behind the writer and does not sync with
 * every commit, so a chain file may lack its tail, describe data that was cut,
 * or not exist yet. Compressed files were closed with a complete chain.
 * Returns the chain's end after the last file, or null when there is none.
 */
async function levelChainFiles(
  dir: string,
  sets: StoreFileSet[],
  keys: readonly EncryptionKey[],
): Promise<ChainState | null> {
  let end: ChainState | null = null;
  for (const [i, set] of sets.entries()) {
    if (set.data === null || isCompressedName(set.data)) {
      end = null;
      continue;
    }
    let prev = end;
    if (set.chain !== null && !isCompressedName(set.chain) && !(await hasCompleteLine(join(dir, set.chain)))) {
      // The chainer was stopped between creating the file and writing its header: as good as missing.
      await Deno.remove(join(dir, set.chain));
      set.chain = null;
    }
    if (set.chain === null && prev === null) {
      const before = sets[i - 1];
      if (before?.chain) prev = chainEnd(await readChainFile(dir, before.chain));
      else if (i === 0 && set.index === 1) prev = genesisState();
      if (prev === null) {
        throw new StoreError(`${set.data} has no chain file and the chain before it is unknown; run "tlslog verify"`);
      }
    }
    end = await levelChainFile(dir, set, prev, keys);
  }
  const last = sets.at(-1);
  if (end === null && last?.chain) end = chainEnd(await readChainFile(dir, last.chain));
  return end;
}

/**
 * Brings one data file's chain file level with its data: records that exist
 * must match the data (else the file was altered while the collector was
 * stopped); missing ones are added, extra ones cut; a missing chain file is
 * made, starting at `prev`.
 */
async function levelChainFile(
  dir: string,
  set: StoreFileSet,
  prev: ChainState | null,
  keys: readonly EncryptionKey[],
): Promise<ChainState> {
  const data = await readStoreFile(dir, set.data!, keys);
  if (set.chain === null) {
    const chained = chainLines(prev!, data);
    await writeChainFile(dir, set.index, prev!, chained.records);
    return chained.state;
  }
  const chain = await readChainFile(dir, set.chain);
  if (chain.malformed.length > 0) {
    throw new StoreError(`${set.chain} line ${chain.malformed[0]} is not a chain record; run "tlslog verify"`);
  }
  // One pass over the data: the records it gives, compared with those the file has. Records past the data
  // (data cut back to the last commit) are cut.
  const chained = chainLines(chain.prev, data);
  const expected = chained.records.split("\n");
  expected.pop();
  for (const [i, record] of chain.records.slice(0, expected.length).entries()) {
    if (`${record.seq} ${toHex(record.hash)}` !== expected[i]) {
      throw new StoreError(
        `${set.chain} line ${record.line} does not match line ${i + 1} of ${set.data}: ` +
          `the store was altered while the collector was stopped; run "tlslog verify"`,
      );
    }
  }
  if (chain.records.length !== expected.length || chain.torn) {
    await writeChainFile(dir, set.index, chain.prev, chained.records);
  }
  return chained.state;
}

/** Writes the chain file of data file `index`: its header, then `records`. */
async function writeChainFile(dir: string, index: number, prev: ChainState, records: string): Promise<void> {
  await Deno.writeTextFile(join(dir, chainFileName(index)), formatChainHeader(index, prev) + records, { mode: 0o600 });
}

/**
 * Chains data files that have no chain yet (a store from before the chain),
 * from the start; files that already have chain files keep them.
 */
async function chainUnchained(
  dir: string,
  sets: StoreFileSet[],
  keys: readonly EncryptionKey[],
  log: (message: string) => void,
): Promise<ChainState> {
  let state = genesisState();
  let built = 0;
  for (const set of sets) {
    if (!set.data) continue;
    const data = await readStoreFile(dir, set.data, keys);
    const chained = chainLines(state, data);
    if (set.chain === null) {
      await writeChainFile(dir, set.index, state, chained.records);
      built++;
    }
    state = chained.state;
  }
  if (built > 0) log(`chained ${state.seq} entries in ${built} data files written before the hash chain`);
  return state;
}
