/**
 * The sender's crash-safe spool: every batch cut from the input is kept in a
 * SQLite database (node:sqlite, WAL, synchronous=FULL) until the server
 * acknowledges it, together with the input's read position, in one
 * transaction. After a crash or kill -9 the sender reopens the spool, resends
 * what is unacknowledged under the same stream id and sequence numbers (so
 * the server stores nothing twice), and resumes reading where the spooled
 * data ends (so nothing is read twice or skipped).
 *
 * SQLite was chosen over hand-written checksummed segments because its WAL
 * recovers a torn write by itself, and one transaction covers the batches and
 * the position they came from.
 *
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { join } from "node:path";

/** A batch as the spool keeps it. */
export interface SpooledBatch {
  seq: number;
  count: number;
  rawBytes: number;
  /** gzip of the newline-terminated entries. */
  body: Uint8Array;
  createdMs: number;
  source: string;
  lineNos: number[];
}

/** Raised when the spool cannot be opened or is inconsistent. */
export class SpoolError extends Error {
  override name = "SpoolError";
}

/** Size and age of what the spool holds. */
export interface SpoolStats {
  batches: number;
  entries: number;
  bytes: number;
  /** Creation time of the oldest unacknowledged batch, or null when empty. */
  oldestMs: number | null;
}

/** The spool database in a directory. */
export class Spool {
  readonly #db: DatabaseSync;
  readonly #insert: StatementSync;
  readonly #delete: StatementSync;
  readonly #setMeta: StatementSync;
  readonly #getMeta: StatementSync;
  readonly #load: StatementSync;
  readonly #oldest: StatementSync;
  readonly #seqsUpTo: StatementSync;
  /** Stable identity of this spool's stream of batches. */
  readonly streamId: string;
  #nextSeq: number;
  #stats: SpoolStats;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#insert = db.prepare(
      "INSERT INTO batches (seq, count, raw_bytes, body, created_ms, source, line_nos) VALUES (?, ?, ?, ?, ?, ?, ?)",
    );
    this.#delete = db.prepare("DELETE FROM batches WHERE seq = ? RETURNING count, length(body) AS bytes");
    this.#setMeta = db.prepare(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    );
    this.#getMeta = db.prepare("SELECT value FROM meta WHERE key = ?");
    this.#load = db.prepare(
      "SELECT seq, count, raw_bytes, body, created_ms, source, line_nos FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
    );
    this.#oldest = db.prepare("SELECT min(created_ms) AS oldest FROM batches");
    this.#seqsUpTo = db.prepare("SELECT seq FROM batches WHERE seq <= ? ORDER BY seq");
    let stream = this.getMeta("stream_id");
    if (stream === null) {
      stream = crypto.randomUUID();
      this.#setMeta.run("stream_id", stream);
    }
    this.streamId = stream;
    const agg = db.prepare(
      "SELECT count(*) AS n, coalesce(sum(count), 0) AS entries, coalesce(sum(length(body)), 0) AS bytes, " +
        "min(created_ms) AS oldest, coalesce(max(seq), 0) AS maxSeq FROM batches",
    ).get() as { n: number; entries: number; bytes: number; oldest: number | null; maxSeq: number };
    this.#stats = { batches: agg.n, entries: agg.entries, bytes: agg.bytes, oldestMs: agg.oldest };
    this.#nextSeq = Math.max(Number(this.getMeta("next_seq") ?? 1), agg.maxSeq + 1);
  }

  /** Opens (creating) the spool in `dir` (mode 0700). */
  static open(dir: string): Spool {
    try {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const path = join(dir, "spool.db");
      const db = new DatabaseSync(path);
      // Batches hold log entries: owner-only, like the directory. The WAL and shared-memory
      // files SQLite creates next take the database file's mode.
      Deno.chmodSync(path, 0o600);
      db.exec(`
        PRAGMA journal_mode = WAL;
        PRAGMA synchronous = FULL;
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS batches (
          seq INTEGER PRIMARY KEY, count INTEGER NOT NULL, raw_bytes INTEGER NOT NULL, body BLOB NOT NULL,
          created_ms INTEGER NOT NULL, source TEXT NOT NULL, line_nos TEXT NOT NULL
        );`);
      return new Spool(db);
    } catch (err) {
      if (err instanceof SpoolError) throw err;
      throw new SpoolError(`cannot open spool ${dir}: ${(err as Error).message}`);
    }
  }

  /** The sequence number the next batch gets. */
  takeSeq(): number {
    return this.#nextSeq++;
  }

  /** Current size and age. */
  get stats(): Readonly<SpoolStats> {
    return this.#stats;
  }

  /** A stored value, or null. */
  getMeta(key: string): string | null {
    const row = this.#getMeta.get(key) as { value: string } | undefined;
    return row?.value ?? null;
  }

  /** Stores batches and metadata (read positions) in one transaction. */
  put(batches: SpooledBatch[], meta: Record<string, string> = {}): void {
    if (batches.length === 0 && Object.keys(meta).length === 0) return;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      for (const b of batches) {
        this.#insert.run(b.seq, b.count, b.rawBytes, b.body, b.createdMs, b.source, JSON.stringify(b.lineNos));
      }
      for (const [k, v] of Object.entries(meta)) this.#setMeta.run(k, v);
      if (batches.length > 0) this.#setMeta.run("next_seq", String(this.#nextSeq));
      this.#db.exec("COMMIT");
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    }
    for (const b of batches) {
      this.#stats.batches++;
      this.#stats.entries += b.count;
      this.#stats.bytes += b.body.length;
      this.#stats.oldestMs = Math.min(this.#stats.oldestMs ?? b.createdMs, b.createdMs);
    }
  }

  /** Up to `limit` batches with seq > `afterSeq`, in order. */
  load(afterSeq: number, limit: number): SpooledBatch[] {
    return (this.#load.all(afterSeq, limit) as Record<string, unknown>[]).map((r) => ({
      seq: Number(r.seq),
      count: Number(r.count),
      rawBytes: Number(r.raw_bytes),
      body: r.body as Uint8Array,
      createdMs: Number(r.created_ms),
      source: String(r.source),
      lineNos: JSON.parse(String(r.line_nos)),
    }));
  }

  /** Removes acknowledged batches; returns how many entries they held. */
  remove(seqs: number[]): number {
    let entries = 0;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      for (const seq of seqs) {
        const row = this.#delete.get(seq) as { count: number; bytes: number } | undefined;
        if (!row) continue;
        entries += row.count;
        this.#stats.batches--;
        this.#stats.entries -= row.count;
        this.#stats.bytes -= row.bytes;
      }
      this.#db.exec("COMMIT");
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    }
    if (this.#stats.batches === 0) this.#stats.oldestMs = null;
    else if (seqs.length > 0) {
      const row = this.#oldest.get() as { oldest: number };
      this.#stats.oldestMs = row.oldest;
    }
    return entries;
  }

  /** Sequence numbers of batches with seq <= `seq`. */
  seqsUpTo(seq: number): number[] {
    return (this.#seqsUpTo.all(seq) as { seq: number }[])
      .map((r) => Number(r.seq));
  }

  /** Closes the database. */
  close(): void {
    this.#db.close();
  }
}
