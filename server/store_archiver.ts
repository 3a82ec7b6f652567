/**
 * Work on closed data files, in the background: compression
 * (`--compress-rotated`) and retention (delete the oldest files by age or
 * count).
 *
 * All work runs in one queue, one step at a time, so it never competes with
 * itself; the file being written (and any file after it) is never touched.
 *
 * Compression of file N writes the new form to `<final name>.tmp` (mode
 * 0600), syncs it, renames it into place, syncs the directory and only then
 * removes the original (see store_files.ts: when both forms exist the
 * compressed one wins, so a crash at any point leaves a readable store). The
 * compressed file keeps the original's modification time, which is the time
 * retention goes by. With an encryption key the gzip stream is sealed again
 * (`.jsonl.gz.enc`); chain files (`.chain.gz`) are never encrypted.
 *
 * Retention deletes a prefix of the closed files, oldest first, so the files
 * kept always hold a contiguous tail of the hash chain. Before deleting, the
 * chain state where the deleted files end is handed to
 * {@link ArchiverOptions.beforeDelete}, which must record it durably (the
 * collector signs a checkpoint); nothing is deleted unless it succeeds.
 *
 * @module
 */
import { join } from "node:path";
import { createGzip, type Gzip } from "node:zlib";
import { concatBytes, writeAll } from "../shared/bytes.ts";
import { syncDir } from "./commit_log.ts";
import { type ChainState, parseChainFile } from "./entry_chain.ts";
import { type EncryptionKey, SealedWriter } from "./sealed_file.ts";
import {
  dataFileName,
  isCompressedName,
  isEncryptedName,
  listStoreFiles,
  readStoreFile,
  readStoreText,
  storeFileIndex,
  type StoreFileSet,
} from "./store_files.ts";

/** Writes `chunk` into the gzip stream, waiting when its buffer is full. */
async function feed(gz: Gzip, chunk: Uint8Array): Promise<void> {
  if (!gz.write(chunk)) await new Promise<void>((resolve) => gz.once("drain", () => resolve()));
}

const DAY_MS = 86_400_000;
/** Plaintext bytes per sealed record of a compressed, encrypted file. */
const SEAL_CHUNK_BYTES = 1 << 20;
/** A temporary file of the archiver: `tlslog-N.jsonl.gz.tmp`, `tlslog-N.chain.gz.tmp`, …. */
const TMP_FILE = /^(tlslog-\d{8,}\.(?:jsonl|chain)(?:\.gz)?(?:\.enc)?)\.tmp$/;

/** Raised (and logged, never thrown to callers) when archiving a file or applying retention fails. */
export class ArchiverError extends Error {
  override name = "ArchiverError";
}

/** How long closed data files are kept. Unset limits do not apply. */
export interface RetentionPolicy {
  /** Delete closed files closed more than this many days ago. */
  days?: number;
  /** Keep at most this many data files in total, the open one included. */
  files?: number;
}

/**
 * Which closed files to delete under `policy`. Always a prefix of `closed`
 * (taken oldest first, by index), so the files kept stay a contiguous tail of
 * the chain: with `days`, deletion stops at the first file that is not yet
 * due, even when a later file is older (a clock step).
 *
 * @param closed the closed data files with their close time (ms)
 * @param openFiles files still open (0 or 1); they count towards `files` but are never deleted
 * @param now the current time (ms)
 * @returns the indices to delete, oldest first
 */
export function selectForRetention(
  closed: readonly { index: number; closedMs: number }[],
  openFiles: number,
  policy: RetentionPolicy,
  now: number,
): number[] {
  const sorted = [...closed].sort((a, b) => a.index - b.index);
  let count = 0;
  if (policy.files !== undefined) {
    count = Math.max(count, sorted.length + openFiles - policy.files);
  }
  if (policy.days !== undefined) {
    const cutoff = now - policy.days * DAY_MS;
    let due = 0;
    while (due < sorted.length && sorted[due]!.closedMs < cutoff) due++;
    count = Math.max(count, due);
  }
  return sorted.slice(0, Math.min(Math.max(count, 0), sorted.length)).map((c) => c.index);
}

/** Options of a {@link StoreArchiver}. */
export interface ArchiverOptions {
  /** The data directory. */
  dir: string;
  /** Gzip closed files. */
  compress: boolean;
  /** Data files are encrypted under this key: compressed data is sealed again (`.jsonl.gz.enc`). */
  encryptKey?: EncryptionKey;
  /** Which closed files to delete. */
  retention: RetentionPolicy;
  /** The clock (ms); `Date.now` by default. */
  now?: () => number;
  /** Where failures and deletions are reported. */
  log?: (message: string) => void;
  /**
   * Called before files are deleted, with the chain state at the end of the
   * last file to be deleted (read from the header of the chain file of the
   * first file kept: its prev_seq/prev) and the last deleted index. Must
   * durably record the pruning (the collector signs a checkpoint); deletion
   * happens only after it resolves, and not at all when it rejects.
   */
  beforeDelete: (pruned: { seq: number; head: Uint8Array; throughFile: number }) => Promise<void>;
  /** Called after files were deleted (for the audit log), with the names removed. */
  onDeleted?: (info: { files: string[]; throughSeq: number }) => void;
  /** Called after a file (data file or chain file) was compressed, with the new name. */
  onCompressed?: (info: { index: number; name: string; bytesBefore: number; bytesAfter: number }) => void;
}

/** Compresses closed data files and applies retention, one step at a time. */
export class StoreArchiver {
  readonly #options: ArchiverOptions;
  readonly #now: () => number;
  readonly #log: (message: string) => void;
  #tail: Promise<void> = Promise.resolve();
  #failures = 0;
  #closed = false;
  /** The highest "file being written" seen: files from it on are never touched. */
  #current = 0;
  #compressQueued = new Set<number>();
  #enforceQueued = false;

  /** @throws {RangeError} for a retention limit that is negative or not a number */
  constructor(options: ArchiverOptions) {
    const { days, files } = options.retention;
    if (days !== undefined && !(Number.isFinite(days) && days >= 0)) {
      throw new RangeError(`retention days must be a number >= 0, got ${days}`);
    }
    if (files !== undefined && !(Number.isSafeInteger(files) && files >= 0)) {
      throw new RangeError(`retention files must be a whole number >= 0, got ${files}`);
    }
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#log = options.log ?? (() => {});
  }

  /** Failures so far (compression or deletion errors), for stats. */
  get failures(): number {
    return this.#failures;
  }

  /**
   * A data file (and its chain file) is closed and committed: queues its
   * compression, then applies retention.
   *
   * @param currentIndex the number of the file now being written (never touched)
   */
  closed(index: number, currentIndex: number): void {
    if (this.#closed) return;
    this.#advance(currentIndex);
    if (this.#options.compress && index < this.#current) this.#queueCompress(index);
    this.#queueEnforce();
  }

  /**
   * At start-up: removes leftovers (an original whose compressed form exists;
   * stale `*.tmp` files of the archiver), queues compression of every closed
   * file still uncompressed, then applies retention.
   *
   * @param firstNewIndex the number of the first file this run writes; files from it on are never touched
   */
  sweep(firstNewIndex: number): void {
    if (this.#closed) return;
    this.#advance(firstNewIndex);
    this.#enqueue("sweep", async () => {
      const sets = await this.#removeLeftovers(firstNewIndex);
      if (this.#options.compress) {
        for (const set of sets) {
          if (set.index >= firstNewIndex) continue;
          const pending = [set.data, set.chain].some((n) => n !== null && !isCompressedName(n));
          if (pending) this.#queueCompress(set.index);
        }
      }
      this.#queueEnforce();
    });
  }

  /** Applies retention now (the collector also calls this on a timer). */
  enforce(currentIndex: number): void {
    if (this.#closed) return;
    this.#advance(currentIndex);
    this.#queueEnforce();
  }

  /** Resolves when all queued work is done; never rejects (errors are logged and counted). */
  async idle(): Promise<void> {
    for (;;) {
      const tail = this.#tail;
      await tail;
      if (tail === this.#tail) return;
    }
  }

  /** Stops accepting work and waits for what is queued. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.idle();
  }

  #advance(currentIndex: number): void {
    if (currentIndex > this.#current) this.#current = currentIndex;
  }

  /** Appends a step to the queue; a step that throws is logged and counted. */
  #enqueue(what: string, step: () => Promise<void>): void {
    this.#tail = this.#tail.then(step).catch((err) => {
      this.#failures++;
      this.#log(`${what} failed: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  #queueCompress(index: number): void {
    if (this.#compressQueued.has(index)) return;
    this.#compressQueued.add(index);
    this.#enqueue(`compressing ${dataFileName(index)}`, async () => {
      this.#compressQueued.delete(index);
      await this.#compress(index);
    });
  }

  #queueEnforce(): void {
    const { days, files } = this.#options.retention;
    if ((days === undefined && files === undefined) || this.#enforceQueued) return;
    this.#enforceQueued = true;
    this.#enqueue("retention", async () => {
      this.#enforceQueued = false;
      await this.#enforce(this.#current);
    });
  }

  /** Removes originals whose compressed form exists and stale temporary files; returns the files left. */
  async #removeLeftovers(below: number): Promise<StoreFileSet[]> {
    const dir = this.#options.dir;
    let removed = false;
    for await (const e of Deno.readDir(dir)) {
      const m = e.isFile ? TMP_FILE.exec(e.name) : null;
      const index = m ? storeFileIndex(m[1]!) : null;
      if (index === null || index >= below) continue;
      await Deno.remove(join(dir, e.name));
      this.#log(`removed ${e.name}, left by an interrupted compression`);
      removed = true;
    }
    const sets = await listStoreFiles(dir);
    for (const set of sets) {
      if (set.index >= below) continue;
      for (const name of set.leftovers) {
        if (!supersededBy(name, set)) continue;
        await Deno.remove(join(dir, name));
        this.#log(`removed ${name}: its compressed form is complete`);
        removed = true;
      }
    }
    if (removed) await syncDir(dir);
    return await listStoreFiles(dir);
  }

  async #compress(index: number): Promise<void> {
    if (index >= this.#current) return;
    const set = (await listStoreFiles(this.#options.dir)).find((s) => s.index === index);
    if (set === undefined) return; // deleted meanwhile
    const key = this.#options.encryptKey;
    if (set.data !== null && !isCompressedName(set.data)) {
      await this.#compressFile(index, set.data, dataFileName(index, { gz: true, enc: key !== undefined }), key);
    }
    if (set.chain !== null && !isCompressedName(set.chain)) {
      await this.#compressFile(index, set.chain, `${set.chain}.gz`, undefined);
    }
    // An original left by a crash after the rename of an earlier attempt.
    const dir = this.#options.dir;
    let removed = false;
    for (const name of set.leftovers) {
      if (!supersededBy(name, set)) continue;
      await Deno.remove(join(dir, name));
      removed = true;
    }
    if (removed) await syncDir(dir);
  }

  /** Writes `final` (gzip of `name`'s plain content, sealed under `key` if given), then removes `name`. */
  async #compressFile(index: number, name: string, final: string, key: EncryptionKey | undefined): Promise<void> {
    const dir = this.#options.dir;
    const source = join(dir, name);
    const info = await Deno.stat(source);
    const keys = this.#options.encryptKey ? [this.#options.encryptKey] : [];
    if (isEncryptedName(name) && keys.length === 0) {
      throw new ArchiverError(`${name} is encrypted and no encryption key was given`);
    }
    const tmp = join(dir, `${final}.tmp`);
    await removeIfExists(tmp);
    let bytesAfter = 0;
    try {
      const file = await Deno.open(tmp, { createNew: true, write: true, mode: 0o600 });
      try {
        const sealer = key ? await SealedWriter.create(key) : null;
        const write = async (bytes: Uint8Array) => {
          await writeAll(file, bytes);
          bytesAfter += bytes.length;
        };
        if (sealer) await write(sealer.header);
        // Streamed, so that compressing a large file does not hold it (and its gzip) in memory whole.
        const gz = createGzip({ level: 6 });
        const output = (async () => {
          let pending: Uint8Array[] = [];
          let pendingBytes = 0;
          const flush = async () => {
            if (pendingBytes === 0) return;
            const chunk = pending.length === 1 ? pending[0]! : concatBytes(pending);
            pending = [];
            pendingBytes = 0;
            await write(sealer ? await sealer.seal(chunk) : chunk);
          };
          for await (const chunk of gz as AsyncIterable<Uint8Array>) {
            pending.push(new Uint8Array(chunk));
            pendingBytes += chunk.length;
            if (pendingBytes >= SEAL_CHUNK_BYTES) await flush();
          }
          await flush();
        })();
        try {
          if (isEncryptedName(name)) {
            // Sealed records are authenticated whole: read (and check) the file at once.
            await feed(gz, await readStoreFile(dir, name, keys));
          } else {
            const source = await Deno.open(join(dir, name), { read: true });
            try {
              for await (const chunk of source.readable) await feed(gz, chunk);
            } catch (err) {
              try {
                source.close();
              } catch {
                // already closed by the stream
              }
              throw err;
            }
          }
          gz.end();
        } catch (err) {
          gz.destroy(err as Error);
          await output.catch(() => {});
          throw err;
        }
        await output;
        await file.sync();
      } finally {
        file.close();
      }
      // Retention goes by the time the file was closed: keep it.
      if (info.mtime) await Deno.utime(tmp, info.atime ?? info.mtime, info.mtime);
      await Deno.rename(tmp, join(dir, final));
    } catch (err) {
      await removeIfExists(tmp).catch(() => {});
      throw err;
    }
    await syncDir(dir);
    await Deno.remove(source);
    await syncDir(dir);
    this.#options.onCompressed?.({ index, name: final, bytesBefore: info.size, bytesAfter });
  }

  async #enforce(currentIndex: number): Promise<void> {
    const dir = this.#options.dir;
    const sets = await listStoreFiles(dir);
    const closed: { index: number; closedMs: number }[] = [];
    for (const set of sets) {
      if (set.index >= currentIndex) continue;
      const name = set.data ?? set.chain ?? set.leftovers[0];
      if (name === undefined) continue;
      const { mtime } = await Deno.stat(join(dir, name));
      // Without a modification time a file is treated as just closed.
      closed.push({ index: set.index, closedMs: mtime?.getTime() ?? this.#now() });
    }
    const openFiles = sets.filter((s) => s.index >= currentIndex && s.data !== null).length;
    const doomed = selectForRetention(closed, openFiles, this.#options.retention, this.#now());
    const through = doomed.at(-1);
    if (through === undefined) return;
    const pruned = await this.#chainAfter(sets, through);
    try {
      await this.#options.beforeDelete({ seq: pruned.seq, head: pruned.head, throughFile: through });
    } catch (err) {
      throw new ArchiverError(
        `recording the pruning through ${dataFileName(through)} failed, nothing deleted: ${(err as Error).message}`,
      );
    }
    const deleted: string[] = [];
    const tmps: string[] = [];
    for await (const e of Deno.readDir(dir)) {
      const m = e.isFile ? TMP_FILE.exec(e.name) : null;
      const index = m ? storeFileIndex(m[1]!) : null;
      if (index !== null && index <= through) tmps.push(e.name);
    }
    try {
      // Oldest first, data before chain: an interruption leaves a contiguous tail behind.
      for (const set of sets) {
        if (set.index > through) break;
        for (const name of [set.data, ...set.leftovers, set.chain]) {
          if (name === null) continue;
          await Deno.remove(join(dir, name));
          deleted.push(name);
        }
      }
      for (const name of tmps) await removeIfExists(join(dir, name));
      await syncDir(dir);
    } finally {
      if (deleted.length > 0) {
        this.#log(
          `retention: deleted ${deleted.length} files through ${dataFileName(through)} (entries 1-${pruned.seq})`,
        );
        this.#options.onDeleted?.({ files: deleted, throughSeq: pruned.seq });
      }
    }
  }

  /** The chain state at the end of file `through`: the header of the next file's chain file, or the last record of its own. */
  async #chainAfter(sets: readonly StoreFileSet[], through: number): Promise<ChainState> {
    const dir = this.#options.dir;
    const next = sets.find((s) => s.index > through);
    if (next !== undefined) {
      if (next.chain === null) {
        throw new ArchiverError(`${dataFileName(next.index)} has no chain file: cannot tell where the chain resumes`);
      }
      return parseChainFile(await readStoreText(dir, next.chain), next.chain).prev;
    }
    // Nothing after it (no file open yet): the last deleted file's chain file says where it ends.
    const last = sets.find((s) => s.index === through);
    if (last === undefined || last.chain === null) {
      throw new ArchiverError(`${dataFileName(through)} has no chain file: cannot tell where the chain ends`);
    }
    const chain = parseChainFile(await readStoreText(dir, last.chain), last.chain);
    if (chain.torn || chain.malformed.length > 0) {
      throw new ArchiverError(`${last.chain} is damaged: cannot tell where the chain ends; run "tlslog verify"`);
    }
    const end = chain.records.at(-1);
    return end ? { seq: end.seq, head: end.hash } : chain.prev;
  }
}

/** Whether leftover `name` is an uncompressed original of a compressed file of `set`. */
function supersededBy(name: string, set: StoreFileSet): boolean {
  if (isCompressedName(name)) return false;
  const kind = name.includes(".jsonl") ? set.data : set.chain;
  return kind !== null && isCompressedName(kind);
}

async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
