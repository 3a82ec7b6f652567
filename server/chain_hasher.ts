/**
 * Chain hashing off the collector's main thread. SHA-256 over every stored
 * entry costs about as much as parsing it; in a Worker it runs on another core
 * while the main thread reads, decompresses and validates the next batches and
 * while the data of the same group is being written. Requests are answered in
 * order (one worker, FIFO), and each carries the state it continues from, so
 * the result is exactly that of `chainLines` (entry_chain.ts) on the main
 * thread.
 *
 * @module
 */
import type { ChainState } from "./entry_chain.ts";
import type { ChainRequest, ChainResponse } from "./chain_worker.ts";

/** Raised when the worker fails; the store then refuses further writes. */
export class ChainHasherError extends Error {
  override name = "ChainHasherError";
}

/** A chain-hashing worker. */
export class ChainHasher {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (r: ChainResponse) => void; reject: (e: Error) => void }>();
  #nextId = 0;
  #failed: Error | null = null;

  constructor() {
    this.#worker = new Worker(new URL("./chain_worker.ts", import.meta.url).href, { type: "module" });
    this.#worker.onmessage = (e: MessageEvent<ChainResponse>) => {
      const waiter = this.#pending.get(e.data.id);
      this.#pending.delete(e.data.id);
      waiter?.resolve(e.data);
    };
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(new ChainHasherError(`chain hashing worker failed: ${e.message}`));
    };
  }

  /** Chains the newline-terminated lines of `data` onto `state`. */
  chain(state: ChainState, data: Uint8Array): Promise<{ state: ChainState; records: string }> {
    if (this.#failed) return Promise.reject(this.#failed);
    const id = this.#nextId++;
    const request: ChainRequest = { id, seq: state.seq, head: state.head, data };
    return new Promise<ChainResponse>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage(request);
    }).then((r) => ({ state: { seq: r.seq, head: r.head }, records: r.records }));
  }

  #fail(err: Error): void {
    this.#failed = err;
    for (const waiter of this.#pending.values()) waiter.reject(err);
    this.#pending.clear();
  }

  /** Stops the worker; pending requests are rejected. */
  close(): void {
    this.#fail(new ChainHasherError("chain hasher closed"));
    this.#worker.terminate();
  }
}
