/**
 * Links committed entries into the hash chain, behind the writer.
 *
 * The store acknowledges a batch once its data and commit record are written
 * (and synced); hashing every entry on that path made each group commit wait
 * for SHA-256 over the whole group. Instead the store hands each committed
 * chunk to this chainer, which hashes it (in a worker, chain_hasher.ts, when
 * given one) and appends the records to the data file's chain file, in order,
 * while the writer goes on. The chain lags the data by what is queued here;
 * checkpoints sign the chain as far as it goes, and after a crash the store
 * rebuilds the chain files' missing tails from the data (rotating_store.ts).
 *
 * The queue is bounded: when it holds more than `maxQueuedBytes`, the writer
 * waits for it ({@linkcode StoreChainer.room}) before committing more.
 *
 * @module
 */
import { join } from "node:path";
import type { ChainHasher } from "./chain_hasher.ts";
import { writeAll } from "../shared/bytes.ts";
import { syncDir } from "./commit_log.ts";
import { chainFileName, chainLines, type ChainState, formatChainHeader } from "./entry_chain.ts";

/** Options for {@linkcode StoreChainer}. */
export interface ChainerOptions {
  dir: string;
  /** Sync each chain file when it is finished (and the directory when one is created). */
  sync: boolean;
  /** Hash in this worker; null hashes on the calling thread. */
  hasher: ChainHasher | null;
  /** Called when a data file's chain file is complete (the chainer moved on to a later file). */
  onFileChained?: (index: number) => void;
  /** Queue bound. Default 8 MiB. */
  maxQueuedBytes?: number;
}

interface Item {
  index: number;
  data: Uint8Array;
}

const encoder = new TextEncoder();

/** Appends committed data to the hash chain, in order, in the background. */
export class StoreChainer {
  readonly #options: ChainerOptions;
  readonly #max: number;
  #state: ChainState;
  #queue: Item[] = [];
  #queuedBytes = 0;
  #file: { index: number; handle: Deno.FsFile } | null = null;
  #running: Promise<void> | null = null;
  #failed: Error | null = null;
  #drained: (() => void)[] = [];

  /** @param state the chain over everything already in chain files */
  constructor(options: ChainerOptions, state: ChainState) {
    this.#options = options;
    this.#max = options.maxQueuedBytes ?? 8 << 20;
    this.#state = state;
  }

  /** The chain over every entry hashed so far. */
  get state(): ChainState {
    return this.#state;
  }

  /** Set when hashing or a chain-file write failed; the store then refuses writes. */
  get failure(): Error | null {
    return this.#failed;
  }

  /** Queues a committed chunk of newline-terminated lines of data file `index`. */
  enqueue(index: number, data: Uint8Array): void {
    if (this.#failed) return;
    this.#queue.push({ index, data });
    this.#queuedBytes += data.length;
    this.#running ??= this.#run();
  }

  /** Resolves when the queue is under its bound (at once when it is). */
  room(): Promise<void> {
    return this.#queuedBytes <= this.#max ? Promise.resolve() : this.idle();
  }

  /** Resolves when everything queued so far is hashed and written (or hashing failed). */
  idle(): Promise<void> {
    if (this.#running === null) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  async #run(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const item = this.#queue.shift()!;
        const file = await this.#fileFor(item.index);
        const hasher = this.#options.hasher;
        const chained = hasher ? await hasher.chain(this.#state, item.data) : chainLines(this.#state, item.data);
        await writeAll(file, encoder.encode(chained.records));
        this.#state = chained.state;
        this.#queuedBytes -= item.data.length;
      }
    } catch (err) {
      this.#failed = err instanceof Error ? err : new Error(String(err));
      this.#queue = [];
      this.#queuedBytes = 0;
    }
    this.#running = null;
    for (const resolve of this.#drained.splice(0)) resolve();
  }

  /** The chain file of data file `index`, finishing the previous one when the data moved on. */
  async #fileFor(index: number): Promise<Deno.FsFile> {
    if (this.#file?.index === index) return this.#file.handle;
    const previous = this.#file;
    if (previous) {
      await this.#finish(previous.handle);
      this.#file = null;
      this.#options.onFileChained?.(previous.index);
    }
    const handle = await Deno.open(join(this.#options.dir, chainFileName(index)), {
      createNew: true,
      write: true,
      mode: 0o600,
    });
    await writeAll(handle, encoder.encode(formatChainHeader(index, this.#state)));
    if (this.#options.sync) await syncDir(this.#options.dir);
    this.#file = { index, handle };
    return handle;
  }

  async #finish(handle: Deno.FsFile): Promise<void> {
    if (this.#options.sync) await handle.syncData();
    handle.close();
  }

  /** Hashes what is queued, then syncs and closes the open chain file. */
  async close(): Promise<void> {
    await this.idle();
    if (this.#file) {
      await this.#finish(this.#file.handle).catch((err) => this.#failed ??= err);
      this.#file = null;
    }
  }
}
