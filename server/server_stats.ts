/**
 * Counters of the collector, and the snapshot `/api/stats` serves. The clock
 * is passed in so that rates are tested without waiting.
 *
 * @module
 */
import type { SenderStatus } from "../shared/protocol.ts";
import type { StatsSnapshot } from "../shared/stats_snapshot.ts";

const RATE_WINDOW_S = 10;

/** Mutable counters owned by the collector. */
export class ServerStats {
  entriesReceived = 0;
  entriesWritten = 0;
  entriesRejected = 0;
  duplicatesSuppressed = 0;
  bytesCompressed = 0;
  bytesUncompressed = 0;
  connectionsActive = 0;
  connectionsTotal = 0;
  framesReceived = 0;
  framesRejected = 0;
  filesWritten = 0;
  fsyncs = 0;
  /** Times a client was slowed down by its rate limit. */
  throttled = 0;
  readonly rejectedByReason: Record<string, number> = {};
  /** Latest STATUS of each sending stream, with when it came. */
  readonly senders = new Map<string, { status: SenderStatus; atMs: number }>();
  readonly #startedMs: number;
  readonly #now: () => number;
  /** Entries written per whole second, keyed by the second. */
  readonly #perSecond = new Map<number, number>();

  /** @param now clock in epoch milliseconds */
  constructor(now: () => number = Date.now) {
    this.#now = now;
    this.#startedMs = now();
  }

  /** Records entries written now. */
  recordWritten(count: number): void {
    this.entriesWritten += count;
    const second = Math.floor(this.#now() / 1000);
    this.#perSecond.set(second, (this.#perSecond.get(second) ?? 0) + count);
    if (this.#perSecond.size > RATE_WINDOW_S * 2) {
      for (const s of this.#perSecond.keys()) {
        if (s <= second - RATE_WINDOW_S) this.#perSecond.delete(s);
      }
    }
  }

  /** Records a refused frame. */
  recordFrameRejected(reason: string): void {
    this.framesRejected++;
    this.#countReason(reason);
  }

  /** Records a refused entry inside an otherwise readable batch. */
  recordEntryRejected(reason: string): void {
    this.entriesRejected++;
    this.#countReason(reason);
  }

  #countReason(reason: string): void {
    this.rejectedByReason[reason] = (this.rejectedByReason[reason] ?? 0) + 1;
  }

  /** Records a sender's STATUS report. */
  recordSenderStatus(stream: string, status: SenderStatus): void {
    this.senders.set(stream, { status, atMs: this.#now() });
  }

  /**
   * The current values, as `/api/stats` shows them. The collector passes the
   * parts these counters do not own: the store's current file and the privacy check.
   */
  snapshot(
    owned: Pick<StatsSnapshot, "current_file" | "privacy" | "evidence" | "tls" | "memory"> = {
      current_file: null,
      privacy: null,
      evidence: null,
      tls: null,
      memory: null,
    },
  ): StatsSnapshot {
    const nowMs = this.#now();
    const senders = { reporting: 0, spool_entries: 0, spool_bytes: 0, oldest_unacked_age_s: 0, retries: 0, dropped: 0 };
    for (const [stream, { status, atMs }] of this.senders) {
      // A sender silent for 5 minutes has stopped; it no longer counts as waiting.
      if (nowMs - atMs > 300_000) {
        this.senders.delete(stream);
        continue;
      }
      senders.reporting++;
      senders.spool_entries += status.spool_entries;
      senders.spool_bytes += status.spool_bytes;
      senders.retries += status.retries;
      senders.dropped += status.dropped;
      if (status.oldest_unacked_ms !== null) {
        const age = Math.round((status.oldest_unacked_ms + nowMs - atMs) / 100) / 10;
        senders.oldest_unacked_age_s = Math.max(senders.oldest_unacked_age_s, age);
      }
    }
    const second = Math.floor(nowMs / 1000);
    let recent = 0;
    // The current second is incomplete: average over the ten whole seconds before it.
    for (const [s, n] of this.#perSecond) {
      if (s < second && s >= second - RATE_WINDOW_S) recent += n;
    }
    return {
      entries_received: this.entriesReceived,
      entries_written: this.entriesWritten,
      entries_rejected: this.entriesRejected,
      duplicates_suppressed: this.duplicatesSuppressed,
      bytes_compressed: this.bytesCompressed,
      bytes_uncompressed: this.bytesUncompressed,
      compression_ratio: this.bytesUncompressed === 0
        ? 0
        : Math.round((this.bytesCompressed / this.bytesUncompressed) * 10_000) / 10_000,
      entries_per_second: Math.round((recent / RATE_WINDOW_S) * 10) / 10,
      connections_active: this.connectionsActive,
      connections_total: this.connectionsTotal,
      frames_received: this.framesReceived,
      frames_rejected: this.framesRejected,
      rejected_by_reason: { ...this.rejectedByReason },
      files_written: this.filesWritten,
      fsyncs: this.fsyncs,
      throttled: this.throttled,
      current_file: owned.current_file,
      senders,
      privacy: owned.privacy,
      evidence: owned.evidence,
      tls: owned.tls,
      memory: owned.memory,
      uptime_s: Math.round((nowMs - this.#startedMs) / 100) / 10,
      started_at: new Date(this.#startedMs).toISOString(),
    };
  }
}
