/**
 * Keeps the collector's resident memory near a target. V8 collects garbage
 * when its own heuristics say so, which lets hundreds of MB of dead buffers
 * (frames, inflated batches, refused gzip bombs) pile up under a burst of
 * input, and glibc keeps freed heap pages resident. The governor watches
 * the resident set, on a timer and after every few MB of input, and when it
 * is over the target runs a full collection and hands freed pages back to
 * the operating system. When that does not bring it under (the memory is in
 * use), it backs off instead of collecting in a loop.
 *
 * The policy is a pure class with the clock and the probes passed in;
 * `platformReclaimers()` finds the real ones.
 *
 * @module
 */
import type { StatsSnapshot } from "../shared/stats_snapshot.ts";

/** What the governor needs from the platform. */
export interface MemoryProbes {
  /** Resident set size of the process, bytes. */
  rss: () => number;
  /** A full garbage collection, or null when not available. */
  collect: (() => void) | null;
  /** Returns freed heap memory to the operating system, or null when not available. */
  trim: (() => void) | null;
  /** Milliseconds, monotonic. */
  now: () => number;
}

/** Counters for /api/stats. */
export type MemoryGovernorStats = NonNullable<StatsSnapshot["memory"]>;

/** Shortest gap between two collections, and the longest back-off. */
const MIN_GAP_MS = 100;
const MAX_GAP_MS = 2_000;
/** A collection that frees less than this (or a tenth of the resident set) makes the governor back off. */
const MIN_FREED_BYTES = 16 << 20;

/** Holds the resident set near `targetBytes` (0: only measures). */
export class MemoryGovernor {
  readonly #target: number;
  readonly #probes: MemoryProbes;
  readonly #checkEveryBytes: number;
  #noted = 0;
  #last = -Infinity;
  #gap = MIN_GAP_MS;
  /** The resident set right after the last collection. */
  #afterLast = 0;
  #rss = 0;
  #peak = 0;
  #collections = 0;
  #overAfter = 0;
  #spentMs = 0;

  /**
   * @param targetBytes resident set above which the governor collects; 0 turns collecting off
   * @param checkEveryBytes input bytes between two checks outside the timer
   */
  constructor(targetBytes: number, probes: MemoryProbes, checkEveryBytes = 8 << 20) {
    this.#target = targetBytes;
    this.#probes = probes;
    this.#checkEveryBytes = checkEveryBytes;
  }

  /** Notes `bytes` of input taken into memory; checks once enough has come in since the last check. */
  note(bytes: number): void {
    this.#noted += bytes;
    if (this.#noted >= this.#checkEveryBytes) this.check();
  }

  /** Measures, and collects when over the target and the last collection is far enough back. */
  check(): void {
    this.#noted = 0;
    const rss = this.#measure();
    if (this.#target === 0 || rss <= this.#target) {
      this.#gap = MIN_GAP_MS;
      return;
    }
    const { collect, trim, now } = this.#probes;
    if (!collect && !trim) return;
    const t = now();
    // Grown by a collection's worth since the last one: collect now, whatever the pace (a burst handled in one
    // turn of the event loop inflates faster than any timer). Otherwise keep the pace, slower when backed off.
    const grown = rss - this.#afterLast >= MIN_FREED_BYTES;
    if (!grown && t - this.#last < this.#gap) return;
    this.#last = t;
    collect?.();
    trim?.();
    this.#collections++;
    this.#spentMs += now() - t;
    const after = this.#measure();
    this.#afterLast = after;
    if (after > this.#target) this.#overAfter++;
    if (rss - after < Math.max(MIN_FREED_BYTES, rss / 10)) {
      // Little was garbage: what is left is in use, and collecting again soon would only burn CPU.
      this.#gap = Math.min(this.#gap * 2, MAX_GAP_MS);
    } else {
      this.#gap = MIN_GAP_MS;
    }
  }

  stats(): MemoryGovernorStats {
    return {
      target_bytes: this.#target,
      rss_bytes: this.#rss,
      peak_rss_bytes: this.#peak,
      collections: this.#collections,
      over_target_after_collection: this.#overAfter,
      collection_ms: Math.round(this.#spentMs),
      can_collect: this.#probes.collect !== null,
      can_trim: this.#probes.trim !== null,
    };
  }

  #measure(): number {
    this.#rss = this.#probes.rss();
    this.#peak = Math.max(this.#peak, this.#rss);
    return this.#rss;
  }
}
