/**
 * The collector's statistics as `/api/stats` shows them. The server produces
 * them; the dashboard only reads this shape.
 *
 * @module
 */

/** A point-in-time view of the collector's counters. */
export interface StatsSnapshot {
  /** Entries that arrived in frames that could be read (stored, duplicate or refused). */
  entries_received: number;
  /** Entries written to the data directory. */
  entries_written: number;
  /** Entries refused one by one (not JSON objects, too large). */
  entries_rejected: number;
  /** Entries in batches resent after a lost ack and not stored again. */
  duplicates_suppressed: number;
  /** Compressed payload bytes of readable frames. */
  bytes_compressed: number;
  /** Those payloads' size after decompression. */
  bytes_uncompressed: number;
  /** bytes_compressed / bytes_uncompressed (0 before any data). */
  compression_ratio: number;
  /** Entries written per second over the last 10 seconds. */
  entries_per_second: number;
  connections_active: number;
  connections_total: number;
  frames_received: number;
  /** Frames answered with an error, all reasons together. */
  frames_rejected: number;
  /** Refusals by reason (frames and entries). */
  rejected_by_reason: Record<string, number>;
  /** Data files created. */
  files_written: number;
  /** fsyncs of data files (one per group commit in batch mode). */
  fsyncs: number;
  /** Times a client was slowed down by its rate limit (--rate-limit, --rate-limit-bytes). */
  throttled: number;
  /** Name of the file being written, or null. */
  current_file: string | null;
  /** What the connected senders report (STATUS): their spools, retries and drops, summed. */
  senders: {
    /** Senders that reported in the last 5 minutes. */
    reporting: number;
    spool_entries: number;
    spool_bytes: number;
    /** Age of the oldest unacknowledged batch of any sender. */
    oldest_unacked_age_s: number;
    retries: number;
    dropped: number;
  };
  /** The de-identification check (--require-deidentified), or null when it is off. */
  privacy: {
    mode: "reject" | "quarantine" | "redact";
    entries_checked: number;
    entries_identifiable: number;
    rejected: number;
    quarantined: number;
    redacted: number;
    by_detector: Record<string, number>;
    /** Tokens and redaction markers the senders' de-identification left in the entries checked. */
    fields_pseudonymised: number;
    key_ids: Record<string, number>;
    redactions: Record<string, number>;
  } | null;
  /** The TLS listener: policy, the certificate in service, reloads; null where no listener is behind the stats. */
  tls: {
    min_version: string;
    /** Whether client certificates are required. */
    mutual: boolean;
    cert_subject: string;
    cert_expires_at: string;
    cert_days_left: number;
    /** Fewer than 30 days left. */
    expiry_warning: boolean;
    reloads: number;
    reload_failures: number;
    /** Connections refused by --allow-clients. */
    clients_refused: number;
  } | null;
  /** The collector's memory and its governor (see server/memory_governor.ts), or null where none is behind the stats. */
  memory: {
    /** Resident set above which the governor collects garbage; 0 when it only measures. */
    target_bytes: number;
    rss_bytes: number;
    peak_rss_bytes: number;
    /** Collections the governor ran. */
    collections: number;
    /** Collections after which the resident set was still over the target (memory in use). */
    over_target_after_collection: number;
    /** Milliseconds spent collecting and trimming, all told. */
    collection_ms: number;
    /** Whether the platform lets it collect (V8 gc) and trim (glibc malloc_trim). */
    can_collect: boolean;
    can_trim: boolean;
  } | null;
  /** Tamper evidence and the lifecycle of stored files, or null where no store is behind the stats. */
  evidence: {
    /** Entries in the hash chain (committed). */
    chain_size: number;
    /** Checkpoints signed by this process. */
    checkpoints_written: number;
    /** Size and time of the latest checkpoint. */
    last_checkpoint_size: number | null;
    last_checkpoint_at: string | null;
    /** Checkpoints that could not be written to --checkpoint-copy. */
    checkpoint_copy_failures: number;
    /** Data files compressed since start. */
    files_compressed: number;
    /** Data files deleted by retention since start. */
    files_deleted: number;
    /** Entries removed by retention, all told (the signed pruned prefix). */
    entries_pruned: number;
    /** Compressions or deletions that failed. */
    archive_failures: number;
    /** Whether data files are encrypted at rest. */
    encrypted: boolean;
  } | null;
  uptime_s: number;
  /** ISO time the collector started. */
  started_at: string;
}
