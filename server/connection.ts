/**
 * One client connection: frames in, entries to the store, answers out in
 * frame order. Speaks v1 (one gzip JSON object per frame) or v2 (numbered
 * batches with pipelining), as chosen by ALPN.
 *
 * @module
 */
import type { TLSSocket } from "node:tls";
import { encodeFrame, FrameDecoder, type FrameEvent } from "../shared/frame_codec.ts";
import { DecompressedTooLargeError, gunzipBounded, GzipFormatError } from "../shared/gzip.ts";
import { InvalidEntryError, parseEntry } from "../shared/json_entry.ts";
import {
  decodeMessage,
  encodeAck,
  encodeNack,
  encodePong,
  encodeV1Error,
  encodeWelcome,
  peekBatchSeq,
  ProtocolError,
  V1_OK,
} from "../shared/protocol.ts";
import { BatchFormatError, ingestBatch, type IngestedBatch } from "./batch_ingest.ts";
import type { RotatingStore, StreamProgress } from "./rotating_store.ts";
import type { ServerStats } from "./server_stats.ts";
import type { PrivacyGuard } from "./privacy_guard.ts";
import type { QuarantineFile } from "./quarantine_file.ts";
import type { StreamRegistry, StreamState } from "./stream_registry.ts";
import { carriesProvenance, PROVENANCE_REFUSAL, stampLine } from "./provenance.ts";
import { TokenBucket } from "../shared/token_bucket.ts";

/** Limits applied to what a client sends. */
export interface IngestLimits {
  /** Largest frame payload (compressed) accepted. */
  maxFrameBytes: number;
  /** Largest decompressed size of one frame. */
  maxBatchBytes: number;
  /** Largest single entry, in bytes of JSON. */
  maxEntryBytes: number;
  /** Close a connection that is silent both ways for this long. Default 10 minutes. */
  idleTimeoutMs?: number;
  /** Refuse and close a frame that has begun but not ended after this long (slow loris). Default 30 s. */
  frameTimeoutMs?: number;
}

/** What a connection needs from the collector. */
export interface ConnectionContext {
  store: RotatingStore;
  stats: ServerStats;
  streams: StreamRegistry;
  limits: IngestLimits;
  /** Checks that entries are de-identified (--require-deidentified), when on. */
  guard?: PrivacyGuard;
  /** Where the guard's quarantine mode sets entries aside. */
  quarantine?: QuarantineFile;
  /** Receives the JSON lines of every write, after it is stored (for --print). */
  onStored?: (lines: Uint8Array) => void;
  /** Diagnostics. */
  log: (message: string) => void;
  /** The audit trail: receives every refusal, with the peer. */
  audit?: (event: string, fields: Record<string, unknown>) => void;
  /** The client's certificate identity under mutual TLS, else null. */
  client?: string | null;
  /** Under mutual TLS: the provenance member stamped on each entry this client sends (provenance.ts). */
  provenance?: string;
  /** Per-client rate limits (by identity, else by IP address): token buckets shared by its connections. */
  rateLimits?: ClientRateLimits;
  /** Bytes all connections together may have waiting for the store before they stop reading. */
  budget?: MemoryBudget;
  /** Told of the bytes taken into memory (received, inflated), so that it can check the resident set. */
  memory?: { note(bytes: number): void };
}

/** A byte budget shared by all connections: what arrived and waits to be stored. */
export class MemoryBudget {
  #used = 0;
  #waiters: (() => void)[] = [];
  /** @param limit bytes */
  constructor(readonly limit: number) {}

  /** Whether the budget is spent. */
  get over(): boolean {
    return this.#used > this.limit;
  }

  take(bytes: number): void {
    this.#used += bytes;
  }

  give(bytes: number): void {
    this.#used -= bytes;
    if (this.#used <= this.limit / 2 && this.#waiters.length > 0) {
      for (const wake of this.#waiters.splice(0)) wake();
    }
  }

  /** Calls `wake` once the budget is half free again. */
  whenUnder(wake: () => void): void {
    if (this.#used <= this.limit / 2) wake();
    else this.#waiters.push(wake);
  }
}

/** Token buckets per client; a client over its rate is slowed (reading paused), never refused. */
export class ClientRateLimits {
  readonly #entriesPerSecond: number | null;
  readonly #bytesPerSecond: number | null;
  readonly #now: () => number;
  readonly #buckets = new Map<string, { entries: TokenBucket | null; bytes: TokenBucket | null }>();
  /** Times a client was slowed down. */
  throttled = 0;

  constructor(limits: { entriesPerSecond?: number; bytesPerSecond?: number }, now: () => number = Date.now) {
    this.#entriesPerSecond = limits.entriesPerSecond ?? null;
    this.#bytesPerSecond = limits.bytesPerSecond ?? null;
    this.#now = now;
  }

  /** Whether any limit is set. */
  get active(): boolean {
    return this.#entriesPerSecond !== null || this.#bytesPerSecond !== null;
  }

  /** Charges `client` for entries and bytes; returns how long to stop reading from it, and why, or null. */
  charge(client: string, entries: number, bytes: number): { wait_ms: number; reason: string } | null {
    let b = this.#buckets.get(client);
    if (!b) {
      // One second's worth may come at once.
      const e = this.#entriesPerSecond;
      const y = this.#bytesPerSecond;
      b = {
        entries: e === null ? null : new TokenBucket(e, Math.max(1, e), this.#now),
        bytes: y === null ? null : new TokenBucket(y, Math.max(1, y), this.#now),
      };
      if (this.#buckets.size >= 10_000) this.#buckets.clear();
      this.#buckets.set(client, b);
    }
    const waitEntries = b.entries?.take(entries) ?? 0;
    const waitBytes = b.bytes?.take(bytes) ?? 0;
    const wait = Math.ceil(Math.max(waitEntries, waitBytes));
    if (wait <= 0) return null;
    this.throttled++;
    const reason = waitEntries >= waitBytes
      ? `over the rate limit of ${this.#entriesPerSecond} entries/s`
      : `over the rate limit of ${this.#bytesPerSecond} bytes/s`;
    return { wait_ms: wait, reason };
  }
}

/** Most answers a connection may owe before it stops reading (backpressure). */
const MAX_OUTSTANDING = 64;
const encoder = new TextEncoder();

/** Reason code and message for a payload that could not be decompressed. */
function gunzipFailure(err: unknown): { code: string; error: string } | null {
  if (err instanceof DecompressedTooLargeError) return { code: "decompressed_too_large", error: err.message };
  if (err instanceof GzipFormatError) return { code: "bad_gzip", error: err.message };
  return null;
}

/** Handles one accepted TLS socket until it closes. */
export class Connection {
  readonly #socket: TLSSocket;
  readonly #ctx: ConnectionContext;
  readonly #v2: boolean;
  readonly #decoder: FrameDecoder;
  #stream: StreamState | null = null;
  #streamId = "";
  /** The stream's key in the registry and commit log: the id, under mutual TLS with the identity. */
  #streamKey = "";
  /** Answers are written in frame order: each waits for the one before. */
  #answers: Promise<void> = Promise.resolve();
  #outstanding = 0;
  #paused = false;
  #frameTimer: ReturnType<typeof setTimeout> | undefined;
  #throttleTimer: ReturnType<typeof setTimeout> | undefined;
  #budgetPaused = false;
  #throttledUntil = 0;
  #ending = false;
  /** Settles when the socket has closed and every answer has been attempted. */
  readonly closed: Promise<void>;

  /** @param socket an accepted socket whose handshake completed */
  constructor(socket: TLSSocket, ctx: ConnectionContext) {
    this.#socket = socket;
    this.#ctx = ctx;
    this.#v2 = socket.alpnProtocol === "tlslog/2";
    this.#decoder = new FrameDecoder({ maxFrameBytes: ctx.limits.maxFrameBytes });
    ctx.stats.connectionsActive++;
    ctx.stats.connectionsTotal++;
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        clearTimeout(this.#frameTimer);
        clearTimeout(this.#throttleTimer);
        ctx.stats.connectionsActive--;
        if (!this.#decoder.idle) this.#refused("frame", "truncated_frame");
        this.#answers.then(resolve, resolve);
      });
    });
    socket.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    socket.setTimeout(ctx.limits.idleTimeoutMs ?? 600_000, () => {
      this.#refused("connection", "idle_timeout");
      socket.destroy();
    });
    socket.on("end", () => this.#end());
    socket.on("error", (err: Error) => ctx.log(`connection ${this.peer}: ${err.message}`));
  }

  /** The peer's address as `host:port`. */
  get peer(): string {
    return `${this.#socket.remoteAddress}:${this.#socket.remotePort}`;
  }

  /** Protocol version in use. */
  get version(): 1 | 2 {
    return this.#v2 ? 2 : 1;
  }

  /**
   * Answers the frames already received, then closes. Bytes arriving after
   * this are discarded unanswered (the client resends them); the socket keeps
   * reading so that it sees the peer's close.
   */
  shutdown(): void {
    this.#end();
    this.#socket.resume();
  }

  /** Closes at once without waiting for answers. */
  destroy(): void {
    this.#socket.destroy();
  }

  #end(): void {
    if (this.#ending) return;
    this.#ending = true;
    this.#answers.then(() => this.#socket.end(), () => this.#socket.destroy());
  }

  #onData(chunk: Uint8Array): void {
    if (this.#ending) return;
    this.#ctx.memory?.note(chunk.length);
    let events: FrameEvent[];
    try {
      events = this.#decoder.push(chunk);
    } catch (err) {
      this.#ctx.log(`connection ${this.peer}: ${(err as Error).message}`);
      this.#socket.destroy();
      return;
    }
    this.#watchFrame();
    for (const event of events) {
      this.#ctx.stats.framesReceived++;
      if (event.kind === "oversize") this.#onOversize(event.length, event.head);
      else if (this.#v2) this.#onV2(event.payload);
      else this.#onV1(event.payload);
    }
    if (this.#outstanding >= MAX_OUTSTANDING && !this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
    // All connections together: past the budget of bytes waiting for the store, stop reading until it drains.
    const budget = this.#ctx.budget;
    if (budget?.over && !this.#budgetPaused) {
      this.#budgetPaused = true;
      this.#socket.pause();
      budget.whenUnder(() => {
        this.#budgetPaused = false;
        if (!this.#paused && this.#throttleTimer === undefined && !this.#socket.destroyed) this.#socket.resume();
      });
    }
  }

  /**
   * Charges this client's rate limits; when it is over them, stops reading from
   * it for as long as its bucket needs to refill (the data already received is
   * stored and answered), and returns why, for the ACK.
   */
  #throttle(entries: number, bytes: number): { wait_ms: number; reason: string } | null {
    const limits = this.#ctx.rateLimits;
    if (!limits?.active) return null;
    const verdict = limits.charge(this.#ctx.client ?? this.#socket.remoteAddress ?? "?", entries, bytes);
    if (!verdict) return null;
    this.#ctx.stats.throttled++;
    this.#socket.pause();
    this.#throttledUntil = Math.max(this.#throttledUntil, Date.now() + verdict.wait_ms);
    clearTimeout(this.#throttleTimer);
    this.#throttleTimer = setTimeout(() => {
      this.#throttleTimer = undefined;
      if (!this.#paused && !this.#budgetPaused && !this.#socket.destroyed) this.#socket.resume();
    }, this.#throttledUntil - Date.now());
    return verdict;
  }

  /** Starts the slow-frame clock when a frame is under way, stops it when none is. */
  #watchFrame(): void {
    if (this.#decoder.idle) {
      clearTimeout(this.#frameTimer);
      this.#frameTimer = undefined;
    } else if (this.#frameTimer === undefined) {
      this.#frameTimer = setTimeout(() => {
        this.#refused("frame", "frame_timeout");
        this.#ctx.log(`connection ${this.peer}: a frame did not arrive whole in time; closing`);
        this.#socket.destroy();
      }, this.#ctx.limits.frameTimeoutMs ?? 30_000);
    }
  }

  /** Queues an answer after the ones before it; `work` may wait for a write. */
  #answer(work: Promise<Uint8Array | null> | Uint8Array): void {
    this.#outstanding++;
    const pending = work instanceof Promise ? work : Promise.resolve(work);
    this.#answers = this.#answers.then(async () => {
      let payload: Uint8Array | null;
      try {
        payload = await pending;
      } catch (err) {
        this.#ctx.log(`store failed, closing ${this.peer}: ${(err as Error).message}`);
        this.#socket.destroy();
        return;
      } finally {
        this.#outstanding--;
        if (this.#paused && this.#outstanding < MAX_OUTSTANDING / 2 && !this.#ending) {
          this.#paused = false;
          if (this.#throttleTimer === undefined && !this.#budgetPaused) this.#socket.resume();
        }
      }
      if (payload !== null && !this.#socket.destroyed) this.#socket.write(encodeFrame(payload));
    });
  }

  /** Counts a refusal and records it in the audit trail. */
  #refused(what: "frame" | "entry" | "connection", reason: string, count = 1): void {
    if (what !== "entry") this.#ctx.stats.recordFrameRejected(reason);
    else for (let i = 0; i < count; i++) this.#ctx.stats.recordEntryRejected(reason);
    const client = this.#ctx.client ? { client: this.#ctx.client } : {};
    this.#ctx.audit?.("refusal", { peer: this.peer, ...client, what, reason, ...(count > 1 ? { count } : {}) });
  }

  #reject(code: string, error: string, seq: number | null): void {
    this.#refused("frame", code);
    this.#answer(this.#v2 ? encodeNack({ seq, code, error }) : encodeV1Error(error));
  }

  #onOversize(length: number, head: Uint8Array): void {
    const error = `frame of ${length} bytes exceeds max-frame-bytes ${this.#ctx.limits.maxFrameBytes}`;
    this.#reject("frame_too_large", error, this.#v2 ? peekBatchSeq(head) : null);
  }

  /** Inflates a payload within --max-batch-bytes; refuses it (and returns null) when it cannot. */
  #inflate(data: Uint8Array, seq: number | null): Uint8Array | null {
    const max = this.#ctx.limits.maxBatchBytes;
    try {
      const raw = gunzipBounded(data, max);
      this.#ctx.memory?.note(raw.length);
      return raw;
    } catch (err) {
      const failure = gunzipFailure(err);
      if (!failure) throw err;
      // A bomb inflated up to the limit before it was stopped.
      this.#ctx.memory?.note(err instanceof DecompressedTooLargeError ? max : data.length);
      this.#reject(failure.code, failure.error, seq);
      return null;
    }
  }

  #onV1(payload: Uint8Array): void {
    const raw = this.#inflate(payload, null);
    if (raw === null) return;
    this.#countBytes(payload.length, raw.length);
    if (raw.length > this.#ctx.limits.maxEntryBytes) {
      return this.#reject("entry_too_large", `entry exceeds max-entry-bytes ${this.#ctx.limits.maxEntryBytes}`, null);
    }
    let entry;
    try {
      entry = parseEntry(new TextDecoder("utf-8", { fatal: true }).decode(raw));
    } catch (err) {
      const error = err instanceof InvalidEntryError ? `entry is ${err.message}` : "entry is not valid UTF-8";
      return this.#reject("invalid_entry", error, null);
    }
    this.#ctx.stats.entriesReceived++;
    if (carriesProvenance(entry)) return this.#reject("reserved_field", PROVENANCE_REFUSAL, null);
    // Re-serialised: a v1 client may send pretty-printed JSON, and a stored entry is one line.
    let text = JSON.stringify(entry);
    const guard = this.#ctx.guard;
    if (guard) {
      const verdict = guard.check(text, entry);
      if (verdict.action === "reject") return this.#reject("not_deidentified", verdict.error, null);
      if (verdict.action === "quarantine") {
        this.#refused("frame", "quarantined");
        const error = `${verdict.error}; set aside in quarantine`;
        return this.#answer(this.#ctx.quarantine!.append([verdict.line]).then(() => encodeV1Error(error)));
      }
      text = verdict.line;
    }
    if (this.#ctx.provenance !== undefined) text = stampLine(text, this.#ctx.provenance);
    const line = encoder.encode(text + "\n");
    // v1 has no field to say why: the client is only slowed.
    this.#throttle(1, line.length);
    this.#answer(this.#store(line, 1).then(() => V1_OK));
  }

  #onV2(payload: Uint8Array): void {
    let message;
    try {
      message = decodeMessage(payload);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      return this.#reject(err.code, err.message, null);
    }
    switch (message.type) {
      case "hello":
        return this.#onHello(message.hello.stream);
      case "ping": {
        const failure = this.#ctx.store.failure;
        if (failure) return this.#reject("store_failed", `store is not writing: ${failure.message}`, null);
        return this.#answer(encodePong(message.nonce));
      }
      case "status":
        if (this.#stream === null) return this.#reject("no_hello", "STATUS before HELLO", null);
        this.#ctx.stats.recordSenderStatus(this.#streamId, message.status);
        return;
      case "batch":
        return this.#onBatch(message.seq, message.count, message.body);
      default:
        return this.#reject("bad_message", `message type "${message.type}" is not sent by clients`, null);
    }
  }

  #onHello(stream: string): void {
    if (this.#stream !== null) return this.#reject("bad_message", "HELLO was already received", null);
    // Under mutual TLS a stream belongs to the identity that sends it: another client naming the same
    // stream id gets a stream of its own, and cannot have this one's batches taken for duplicates.
    this.#streamKey = this.#ctx.client ? JSON.stringify([this.#ctx.client, stream]) : stream;
    this.#stream = this.#ctx.streams.get(this.#streamKey);
    this.#streamId = stream;
    const { limits } = this.#ctx;
    this.#answer(encodeWelcome({
      stream,
      // Only what is written: a batch whose write is still pending is resent and then
      // answered as a duplicate once that write completes (or stored if it failed).
      last_seq: this.#stream.storedSeq,
      max_frame_bytes: limits.maxFrameBytes,
      max_batch_bytes: limits.maxBatchBytes,
      max_entry_bytes: limits.maxEntryBytes,
    }));
  }

  #onBatch(seq: number, count: number, body: Uint8Array): void {
    const stream = this.#stream;
    if (stream === null) return this.#reject("no_hello", "BATCH before HELLO", seq);
    if (seq <= stream.claimedSeq) {
      this.#ctx.stats.entriesReceived += count;
      this.#ctx.stats.duplicatesSuppressed += count;
      // Acknowledged once the original write (possibly still pending) is done.
      return this.#answer(this.#ctx.store.barrier().then(() => encodeAck({ seq, stored: 0, duplicate: true })));
    }
    const raw = this.#inflate(body, seq);
    if (raw === null) return;
    let batch;
    try {
      batch = ingestBatch(
        raw,
        count,
        this.#ctx.limits.maxEntryBytes,
        this.#ctx.guard !== undefined,
        this.#ctx.provenance,
      );
    } catch (err) {
      if (!(err instanceof BatchFormatError)) throw err;
      return this.#reject(err.code, err.message, seq);
    }
    this.#countBytes(body.length, raw.length);
    this.#ctx.stats.entriesReceived += count;
    let quarantined: Promise<void> = Promise.resolve();
    if (this.#ctx.guard) quarantined = this.#guardBatch(batch);
    const reasons = new Map<string, number>();
    for (const r of batch.rejected) reasons.set(r.code, (reasons.get(r.code) ?? 0) + 1);
    for (const [reason, n] of reasons) this.#refused("entry", reason, n);
    stream.claimedSeq = seq;
    const throttle = this.#throttle(batch.count, raw.length);
    const rejected = batch.rejected.map(({ index, error, code }) => ({ index, error, code }));
    const stored = Promise.all([this.#store(batch.data, batch.count, { stream: this.#streamKey, seq }), quarantined])
      .then(
        () => {
          stream.storedSeq = Math.max(stream.storedSeq, seq);
          return encodeAck({
            seq,
            stored: batch.count,
            ...(rejected.length > 0 ? { rejected } : {}),
            ...(throttle ? { throttle } : {}),
          });
        },
        (err) => {
          stream.claimedSeq = stream.storedSeq;
          throw err;
        },
      );
    this.#answer(stored);
  }

  /**
   * Applies the privacy guard to a validated batch: identifiable entries are
   * refused one by one (with the field and detector) or set aside, or fixed.
   * The other entries of the batch are unaffected.
   */
  #guardBatch(batch: IngestedBatch): Promise<void> {
    const guard = this.#ctx.guard!;
    const kept: string[] = [];
    const aside: string[] = [];
    for (const { index, line, entry } of batch.entries!) {
      const verdict = guard.check(line, entry);
      if (verdict.action === "store") {
        kept.push(this.#ctx.provenance === undefined ? verdict.line : stampLine(verdict.line, this.#ctx.provenance));
      } else {
        if (verdict.action === "quarantine") aside.push(verdict.line);
        const code = verdict.action === "reject" ? "not_deidentified" : "quarantined";
        batch.rejected.push({ index, code, error: verdict.error });
      }
    }
    batch.rejected.sort((a, b) => a.index - b.index);
    batch.data = encoder.encode(kept.length === 0 ? "" : kept.join("\n") + "\n");
    batch.count = kept.length;
    return aside.length > 0 ? this.#ctx.quarantine!.append(aside) : Promise.resolve();
  }

  #countBytes(compressed: number, uncompressed: number): void {
    this.#ctx.stats.bytesCompressed += compressed;
    this.#ctx.stats.bytesUncompressed += uncompressed;
  }

  async #store(lines: Uint8Array, count: number, progress?: StreamProgress): Promise<void> {
    const budget = this.#ctx.budget;
    budget?.take(lines.length);
    try {
      await this.#ctx.store.append(lines, count, progress);
    } finally {
      budget?.give(lines.length);
    }
    this.#ctx.stats.recordWritten(count);
    if (count > 0) this.#ctx.onStored?.(lines);
  }
}
