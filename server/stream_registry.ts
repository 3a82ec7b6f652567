/**
 * Per-stream progress: the highest batch sequence number stored for each
 * sending stream, so that a batch resent after a lost ack is acknowledged
 * again but not stored twice.
 *
 * @module
 */

/** Progress of one stream. */
export interface StreamState {
  /** Highest sequence number written to the store. */
  storedSeq: number;
  /** Highest sequence number accepted for writing (>= storedSeq while writes are pending). */
  claimedSeq: number;
}

/**
 * Registry of stream progress. It starts from what the store's commit log
 * recovered, and the store persists every advance with the data it describes.
 */
export class StreamRegistry {
  readonly #streams = new Map<string, StreamState>();

  /** @param recovered highest stored sequence per stream, from the store */
  constructor(recovered: ReadonlyMap<string, number> = new Map()) {
    for (const [stream, seq] of recovered) this.#streams.set(stream, { storedSeq: seq, claimedSeq: seq });
  }

  /** The state of `stream`, created at zero when new. */
  get(stream: string): StreamState {
    let state = this.#streams.get(stream);
    if (!state) {
      state = { storedSeq: 0, claimedSeq: 0 };
      this.#streams.set(stream, state);
    }
    return state;
  }

  /** Number of streams seen. */
  get size(): number {
    return this.#streams.size;
  }
}
