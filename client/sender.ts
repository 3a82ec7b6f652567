/**
 * The sending side of protocol v2: entries are cut into batches, compressed,
 * numbered and sent with up to `maxInFlight` batches awaiting their acks. A
 * cut connection is retried with exponential backoff, and every batch not yet
 * acknowledged is sent again under its original number, so the server can
 * tell a resend from new data.
 *
 * @module
 */
import { backoffDelay, type BackoffOptions } from "../shared/backoff.ts";
import { encodeFrame, FrameDecoder } from "../shared/frame_codec.ts";
import { gzip } from "../shared/gzip.ts";
import { TokenBucket } from "../shared/token_bucket.ts";
import {
  type Ack,
  ALPN_V2,
  BATCH_HEADER_BYTES,
  decodeMessage,
  encodeBatch,
  encodeHello,
  encodeStatus,
  type Nack,
  type V2Message,
  type Welcome,
} from "../shared/protocol.ts";
import type { Spool } from "./spool.ts";
import { CertificateError, type Transport } from "./tls_transport.ts";
import { writeAll } from "../shared/bytes.ts";

/** Options for {@linkcode Sender}. */
export interface SenderOptions {
  /** Opens a connection (with ALPN `tlslog/2`). */
  connect: () => Promise<Transport>;
  /** Identity of this stream of batches. Default: a random UUID. */
  stream?: string;
  /** Entries per batch. Default 1000. */
  batchSize?: number;
  /** Uncompressed bytes per batch, at most. Default 512 KiB. */
  batchBytes?: number;
  /** Batches sent and not yet acknowledged, at most. Default 16. */
  maxInFlight?: number;
  /** gzip level 1-9. Default 1. */
  gzipLevel?: number;
  /** Failed connection attempts in a row before giving up. Default 10. */
  retries?: number;
  /** Backoff schedule; default 1 s doubling to 30 s. */
  backoff?: BackoffOptions;
  /** Send a partial batch after entries waited this long. Default 200 ms. */
  lingerMs?: number;
  /** Reconnect when batches are outstanding and no answer came for this long. Default 30000 ms. */
  ackTimeoutMs?: number;
  /** Waits; injected in tests. */
  sleep?: (ms: number) => Promise<void>;
  /** Randomness for jitter; injected in tests. */
  random?: () => number;
  /** Progress and retry notices. */
  onEvent?: (event: SenderEvent) => void;
  /** Keep batches on disk until acknowledged; the stream id and sequence numbers come from it. */
  spool?: Spool;
  /** Spool capacity in bytes of compressed batches. Default 1 GiB. */
  spoolMaxBytes?: number;
  /** What to do when the spool is full. Default "block" (slow the input down). */
  whenFull?: "block" | "drop-oldest" | "drop-newest";
  /** Clock for batch ages; also the rate limit's clock when given (else a monotonic one). */
  now?: () => number;
  /**
   * Entries per second at most, on average (client-side rate limit; default
   * none). Entries beyond it wait in {@linkcode Sender.add}/{@linkcode Sender.addChunk}
   * before they are taken, so the input slows down and nothing is dropped.
   * The burst is one batch or a tenth of a second's worth, whichever is more.
   * With a spool, a chunk is taken whole (it is stored in one transaction
   * with its read position), so a large chunk waits for all of its entries
   * and then goes at once. Entries resumed from a spool are not counted: an
   * earlier run took them.
   */
  rateLimit?: number;
  /** Once aborted (a stop signal), rate-limit waits end: what was read is taken at once, to be delivered. */
  signal?: AbortSignal;
}

/** Something the sender wants to tell its user. */
export type SenderEvent =
  | { type: "connected"; attempt: number }
  | { type: "retry"; attempt: number; delayMs: number; error: string }
  | { type: "rejected"; source: string; line: number; error: string; code?: string }
  | { type: "dropped"; entries: number; reason: string }
  | { type: "throttled"; waitMs: number; reason: string };

/** A refused entry, located in the input. */
export interface Rejection {
  source: string;
  line: number;
  error: string;
  /** The collector's reason key, when it gave one (`invalid_entry`, `entry_too_large`). */
  code?: string;
}

/** What happened, as the summary prints it. */
export interface SendSummary {
  /** Entries handed to the sender (including those resumed from the spool). */
  entries: number;
  /** Entries an earlier run left unacknowledged in the spool. */
  resumedFromSpool: number;
  /** Entries the server acknowledged as stored (or already stored). */
  acknowledged: number;
  /** Entries refused by the server. */
  rejected: Rejection[];
  /** Entries in batches the server had already stored (resends after a lost ack). */
  duplicates: number;
  batches: number;
  rawBytes: number;
  compressedBytes: number;
  /** Reconnections after a failure. */
  retries: number;
  /** Batches sent more than once. */
  resentBatches: number;
  /** Entries dropped because the spool was full (--when-full drop-oldest or drop-newest). */
  dropped: number;
  /** What the spool holds now (zero without a spool). */
  spoolBatches: number;
  spoolEntries: number;
  spoolBytes: number;
  /** Age of the oldest unacknowledged batch in ms, or null when all are acknowledged. */
  oldestUnackedMs: number | null;
  /** The rate limit in entries per second, or null without one. */
  rateLimit: number | null;
  /** Milliseconds the input waited for the rate limit, in all. */
  rateLimitWaitMs: number;
}

/** The sender gave up: the connection failed more often in a row than allowed. */
export class RetriesExhaustedError extends Error {
  override name = "RetriesExhaustedError";
}

/** The server broke the protocol or does not speak v2. */
export class ServerProtocolError extends Error {
  override name = "ServerProtocolError";
}

interface Batch {
  seq: number;
  frame: Uint8Array;
  count: number;
  source: string[];
  lineNos: number[];
  sends: number;
  createdMs: number;
}

/** Raised inside a session to end it and reconnect. */
class SessionError extends Error {
  override name = "SessionError";
}

const encoder = new TextEncoder();
const ANSWER_MAX_BYTES = 1 << 20;
const STATUS_INTERVAL_MS = 1000;

/**
 * Sends entries over v2 with pipelining and retries.
 *
 * @example
 * ```ts
 * const sender = new Sender({ connect: () => connectTransport({ host, port, caCert, alpnProtocols: [ALPN_V2] }) });
 * await sender.add(['{"msg":"hi"}'], "<stdin>", [1]);
 * const summary = await sender.finish();
 * ```
 */
export class Sender {
  readonly #o:
    & Required<Omit<SenderOptions, "onEvent" | "backoff" | "spool" | "rateLimit" | "signal">>
    & Pick<SenderOptions, "onEvent" | "backoff" | "spool" | "rateLimit" | "signal">;
  readonly #summary: SendSummary = {
    entries: 0,
    resumedFromSpool: 0,
    acknowledged: 0,
    rejected: [],
    duplicates: 0,
    batches: 0,
    rawBytes: 0,
    compressedBytes: 0,
    retries: 0,
    resentBatches: 0,
    dropped: 0,
    spoolBatches: 0,
    spoolEntries: 0,
    spoolBytes: 0,
    oldestUnackedMs: null,
    rateLimit: null,
    rateLimitWaitMs: 0,
  };
  #entries: string[] = [];
  #sources: string[] = [];
  #lineNos: number[] = [];
  #pendingBytes = 0;
  #nextSeq = 1;
  /** Batches not yet answered, in sequence order. */
  readonly #unacked = new Map<number, Batch>();
  /** Batches to write on the current connection. */
  #toSend: Batch[] = [];
  #finished = false;
  #failure: Error | null = null;
  #wakeWriter: (() => void) | null = null;
  #windowWaiters: (() => void)[] = [];
  #loop: Promise<void> | null = null;
  #linger: ReturnType<typeof setTimeout> | undefined;
  /** Batches cut and not yet handed over (to the spool, or to the send queue). */
  #staged: Batch[] = [];
  /** With a spool: the highest seq loaded from it into memory. */
  #loadedUpTo = 0;
  #ackWaiters: (() => void)[] = [];
  /** Report STATUS at the next chance (after WELCOME, then every STATUS_INTERVAL_MS). */
  #sendStatus = false;
  /** With a rate limit: its bucket, and how many entries are let in per wait. */
  readonly #bucket: TokenBucket | null = null;
  readonly #rateSlice: number = Infinity;
  /** Rate-limit waits in progress: each ends early on a failure. */
  readonly #rateWaiters = new Set<() => void>();

  /** @param options see {@linkcode SenderOptions} */
  constructor(options: SenderOptions) {
    this.#o = {
      stream: crypto.randomUUID(),
      batchSize: 1000,
      batchBytes: 512 * 1024,
      maxInFlight: 16,
      gzipLevel: 1,
      retries: 10,
      ackTimeoutMs: 30_000,
      lingerMs: 200,
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      random: Math.random,
      spoolMaxBytes: 1024 ** 3,
      whenFull: "block",
      now: Date.now,
      ...options,
    };
    const rate = this.#o.rateLimit;
    if (rate !== undefined) {
      if (!Number.isFinite(rate) || rate <= 0) {
        throw new RangeError(`rateLimit must be a finite number of entries per second above 0, got ${rate}`);
      }
      const clock = options.now ?? (() => performance.now());
      this.#bucket = new TokenBucket(rate, Math.max(this.#o.batchSize, rate / 10), clock);
      // Let entries in by a fifth of a second's worth (at most a batch): a stop or a failure
      // is noticed between waits, and a backlog goes out steadily rather than in long pauses.
      this.#rateSlice = Math.max(1, Math.min(this.#o.batchSize, Math.floor(rate / 5)));
      this.#summary.rateLimit = rate;
    }
    if (this.#o.spool) {
      this.#o.stream = this.#o.spool.streamId;
      // Entries taken from the input by an earlier run and still unacknowledged.
      this.#summary.entries = this.#o.spool.stats.entries;
      this.#summary.resumedFromSpool = this.#o.spool.stats.entries;
      this.#pump();
      this.#updateSpoolStats();
    }
  }

  /** Live counters (the same object {@linkcode finish} returns). */
  get summary(): Readonly<SendSummary> {
    return this.#summary;
  }

  /** Batches sent and awaiting an answer. */
  get inFlight(): number {
    return this.#unacked.size;
  }

  /**
   * Adds entries (each one JSON object on one line). Resolves when there is
   * room for more: the caller is slowed down to the pace of the acks (or, with
   * a spool, to the spool's capacity), and to the rate limit when there is one.
   */
  async add(entries: string[], source: string, lineNos: number[]): Promise<void> {
    await this.addChunk(entries, source, lineNos);
  }

  /**
   * Adds entries read from one chunk of input. With a spool, `meta` (the
   * input's read position after this chunk) is stored in the same transaction
   * as every batch cut from the chunk, and the partial batch is cut too, so
   * that everything taken from the input is on disk when this resolves.
   */
  async addChunk(entries: string[], source: string, lineNos: number[], meta?: Record<string, string>): Promise<void> {
    // With a spool, the chunk's batches and its read position are stored together: it is let in whole.
    const slice = this.#o.spool ? entries.length : this.#rateSlice;
    for (let i = 0; i < entries.length; i++) {
      if (this.#bucket && i % slice === 0) await this.#throttle(Math.min(slice, entries.length - i));
      const entry = entries[i]!;
      this.#entries.push(entry);
      this.#sources.push(source);
      this.#lineNos.push(lineNos[i]!);
      this.#pendingBytes += entry.length + 1;
      this.#summary.entries++;
      if (this.#entries.length >= this.#o.batchSize || this.#pendingBytes >= this.#o.batchBytes) {
        this.#cutBatch();
        if (!this.#o.spool) await this.#handOver();
      }
    }
    if (this.#o.spool) {
      if (meta) this.#cutBatch();
      await this.#handOver(meta);
    }
    this.#armLinger();
  }

  /** Sends a partial batch once its entries waited `lingerMs`. */
  #armLinger(): void {
    if (this.#entries.length > 0 && this.#linger === undefined) {
      this.#linger = setTimeout(() => {
        this.#cutBatch();
        this.#handOver().catch(() => {});
      }, this.#o.lingerMs);
    }
  }

  /**
   * Waits until the rate limit lets `n` more entries in. The tokens are
   * reserved first, so the wait is exact however late the timer fires.
   */
  async #throttle(n: number): Promise<void> {
    if (this.#failure) throw this.#failure;
    const waitMs = this.#bucket!.take(n);
    if (waitMs <= 0 || this.#o.signal?.aborted) return;
    // Entries let in before are not held back by this wait.
    this.#armLinger();
    const started = performance.now();
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#o.signal?.removeEventListener("abort", done);
        this.#rateWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      this.#o.signal?.addEventListener("abort", done);
      this.#rateWaiters.add(done);
    });
    this.#summary.rateLimitWaitMs += performance.now() - started;
    if (this.#failure) throw this.#failure;
  }

  /** Moves staged batches to the spool or the send queue, waiting for room. */
  async #handOver(meta?: Record<string, string>): Promise<void> {
    const spool = this.#o.spool;
    if (!spool) {
      for (const batch of this.#staged.splice(0)) this.#enqueue(batch);
      while (this.#unacked.size >= this.#o.maxInFlight && !this.#failure) {
        await new Promise<void>((resolve) => this.#windowWaiters.push(resolve));
      }
      if (this.#failure) throw this.#failure;
      return;
    }
    const batches = this.#staged.splice(0);
    const kept: Batch[] = [];
    for (const batch of batches) {
      while (spool.stats.bytes + batch.frame.length > this.#o.spoolMaxBytes && spool.stats.batches > 0) {
        if (this.#failure) throw this.#failure;
        if (this.#o.whenFull === "block") {
          // Never drops: the input waits until acks make room.
          await new Promise<void>((resolve) => this.#ackWaiters.push(resolve));
          continue;
        }
        if (this.#o.whenFull === "drop-oldest" && this.#dropOldest()) continue;
        // drop-newest, or drop-oldest with every spooled batch already in flight.
        this.#drop(batch.count, `spool full (${this.#o.whenFull})`);
        batch.count = 0;
        break;
      }
      if (batch.count > 0) kept.push(batch);
    }
    spool.put(
      kept.map((b) => ({
        seq: b.seq,
        count: b.count,
        rawBytes: 0,
        body: b.frame.subarray(4 + BATCH_HEADER_BYTES),
        createdMs: b.createdMs,
        source: b.source[0] ?? "",
        lineNos: b.lineNos,
      })),
      meta,
    );
    this.#updateSpoolStats();
    this.#pump();
    this.#loop ??= this.#run();
    this.#wake();
  }

  /** Drops the oldest spooled batch not yet loaded for sending; false when there is none. */
  #dropOldest(): boolean {
    const spool = this.#o.spool!;
    const [oldest] = spool.load(this.#loadedUpTo, 1);
    if (!oldest) return false;
    spool.remove([oldest.seq]);
    this.#drop(oldest.count, "spool full (drop-oldest)");
    return true;
  }

  #drop(entries: number, reason: string): void {
    this.#summary.dropped += entries;
    this.#o.onEvent?.({ type: "dropped", entries, reason });
  }

  /** With a spool: loads batches into memory while the in-flight window has room. */
  #pump(): void {
    const spool = this.#o.spool;
    if (!spool) return;
    const room = this.#o.maxInFlight - this.#unacked.size;
    if (room <= 0) return;
    for (const b of spool.load(this.#loadedUpTo, room)) {
      this.#loadedUpTo = b.seq;
      this.#enqueue({
        seq: b.seq,
        frame: encodeFrame(encodeBatch(b.seq, b.count, b.body)),
        count: b.count,
        source: b.lineNos.map(() => b.source),
        lineNos: b.lineNos,
        sends: 0,
        createdMs: b.createdMs,
      });
    }
  }

  #enqueue(batch: Batch): void {
    this.#unacked.set(batch.seq, batch);
    this.#toSend.push(batch);
    this.#loop ??= this.#run();
    this.#wake();
  }

  #updateSpoolStats(): void {
    const spool = this.#o.spool;
    if (spool) {
      const st = spool.stats;
      this.#summary.spoolBatches = st.batches;
      this.#summary.spoolEntries = st.entries;
      this.#summary.spoolBytes = st.bytes;
      this.#summary.oldestUnackedMs = st.oldestMs === null ? null : this.#o.now() - st.oldestMs;
    } else {
      let oldest: number | null = null;
      for (const b of this.#unacked.values()) oldest = Math.min(oldest ?? b.createdMs, b.createdMs);
      this.#summary.oldestUnackedMs = oldest === null ? null : this.#o.now() - oldest;
    }
  }

  /** Sends what is left and waits until every batch is answered. */
  async finish(): Promise<SendSummary> {
    this.#cutBatch();
    await this.#handOver();
    this.#finished = true;
    this.#wake();
    this.#loop ??= this.#run();
    await this.#loop;
    this.#updateSpoolStats();
    if (this.#failure) throw this.#failure;
    return this.#summary;
  }

  #cutBatch(): void {
    clearTimeout(this.#linger);
    this.#linger = undefined;
    if (this.#entries.length === 0) return;
    const text = this.#entries.join("\n") + "\n";
    const raw = encoder.encode(text);
    const body = gzip(raw, this.#o.gzipLevel);
    const seq = this.#o.spool ? this.#o.spool.takeSeq() : this.#nextSeq++;
    this.#staged.push({
      seq,
      frame: encodeFrame(encodeBatch(seq, this.#entries.length, body)),
      count: this.#entries.length,
      source: this.#sources,
      lineNos: this.#lineNos,
      sends: 0,
      createdMs: this.#o.now(),
    });
    this.#summary.batches++;
    this.#summary.rawBytes += raw.length;
    this.#summary.compressedBytes += body.length;
    this.#entries = [];
    this.#sources = [];
    this.#lineNos = [];
    this.#pendingBytes = 0;
  }

  #wake(): void {
    const wake = this.#wakeWriter;
    this.#wakeWriter = null;
    wake?.();
  }

  #releaseWindow(): void {
    const waiters = [...this.#windowWaiters, ...this.#ackWaiters];
    this.#windowWaiters = [];
    this.#ackWaiters = [];
    for (const w of waiters) w();
  }

  #done(): boolean {
    if (!this.#finished || this.#unacked.size > 0 || this.#staged.length > 0) return false;
    return !this.#o.spool || this.#o.spool.stats.batches === 0;
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#done()) {
      let progressed = false;
      try {
        const transport = await this.#o.connect();
        this.#o.onEvent?.({ type: "connected", attempt: failures });
        progressed = await this.#session(transport);
        if (this.#done()) break;
        throw new SessionError("server closed the connection");
      } catch (err) {
        // The writer closes the connection once everything is answered.
        if (this.#done()) break;
        if (err instanceof CertificateError || err instanceof ServerProtocolError) {
          this.#fail(err);
          return;
        }
        failures = progressed ? 1 : failures + 1;
        if (failures > this.#o.retries) {
          this.#fail(
            new RetriesExhaustedError(
              `gave up after ${this.#o.retries} retries: ${(err as Error).message}; ` +
                `${this.#unacked.size} batches (${this.#unackedEntries()} entries) not acknowledged`,
            ),
          );
          return;
        }
        const delayMs = backoffDelay(failures - 1, this.#o.backoff, this.#o.random);
        this.#summary.retries++;
        this.#o.onEvent?.({ type: "retry", attempt: failures, delayMs, error: (err as Error).message });
        await this.#o.sleep(delayMs);
      }
    }
  }

  #unackedEntries(): number {
    let n = 0;
    for (const b of this.#unacked.values()) n += b.count;
    return n;
  }

  #fail(err: Error): void {
    this.#failure = err;
    this.#releaseWindow();
    for (const wake of [...this.#rateWaiters]) wake();
  }

  /** One connection's life. Returns whether any batch was answered on it. */
  async #session(transport: Transport): Promise<boolean> {
    const { conn } = transport;
    if (transport.alpnProtocol !== ALPN_V2) {
      conn.close();
      throw new ServerProtocolError(
        `server does not speak ${ALPN_V2} (ALPN answer: ${transport.alpnProtocol ?? "none"})`,
      );
    }
    let progressed = false;
    let closed = false;
    const answers = readAnswers(conn);
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    let statusTimer: ReturnType<typeof setInterval> | undefined;
    const armWatchdog = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        if (this.#unacked.size > 0) conn.close();
      }, this.#o.ackTimeoutMs);
    };
    try {
      await conn.write(encodeFrame(encodeHello({ stream: this.#o.stream, client: "tlslog" })));
      armWatchdog();
      const first = await answers.next();
      if (first.done) throw new SessionError("connection closed before WELCOME");
      if (first.value.type === "nack") {
        // The collector refused the session itself (e.g. a client identity not in --allow-clients): not retried.
        const { code, error } = first.value.nack;
        throw new ServerProtocolError(`the collector refused the connection: ${error} (${code})`);
      }
      if (first.value.type !== "welcome") {
        throw new ServerProtocolError(`expected WELCOME, got ${first.value.type}`);
      }
      this.#onWelcome(first.value.welcome);
      this.#toSend = [...this.#unacked.values()];
      this.#sendStatus = true;
      statusTimer = setInterval(() => {
        this.#sendStatus = true;
        this.#wake();
      }, STATUS_INTERVAL_MS);
      // A failed write means a broken connection: closing it ends the read loop too.
      const writer = this.#writeLoop(conn, () => closed).catch(() => conn.close());
      try {
        for await (const message of answers) {
          armWatchdog();
          if (message.type === "ack") this.#onAck(message.ack);
          else if (message.type === "nack") this.#onNack(message.nack);
          else throw new ServerProtocolError(`unexpected ${message.type} from server`);
          progressed = true;
          this.#releaseWindow();
          // The writer sends the last STATUS and closes; the read then ends.
          if (this.#done()) this.#wake();
        }
      } finally {
        closed = true;
        this.#wake();
        await writer;
      }
      return progressed;
    } catch (err) {
      if (err instanceof ServerProtocolError) throw err;
      throw new SessionError((err as Error).message);
    } finally {
      clearTimeout(watchdog);
      clearInterval(statusTimer);
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed by the peer or the watchdog
      }
    }
  }

  async #writeLoop(conn: Transport["conn"], isClosed: () => boolean): Promise<void> {
    while (!isClosed()) {
      if (this.#done()) {
        // Tell the collector nothing is waiting any more; then close: after the last ack,
        // nothing more will arrive to end the read loop.
        await this.#writeStatus(conn);
        conn.close();
        return;
      }
      if (this.#sendStatus) {
        this.#sendStatus = false;
        await this.#writeStatus(conn);
        continue;
      }
      const batch = this.#toSend.shift();
      if (batch === undefined) {
        await new Promise<void>((resolve) => this.#wakeWriter = resolve);
        continue;
      }
      if (!this.#unacked.has(batch.seq)) continue;
      if (batch.sends++ > 0) this.#summary.resentBatches++;
      await writeAll(conn, batch.frame);
    }
  }

  async #writeStatus(conn: Transport["conn"]): Promise<void> {
    this.#updateSpoolStats();
    const s = this.#summary;
    await writeAll(
      conn,
      encodeFrame(encodeStatus({
        spool_entries: this.#o.spool ? s.spoolEntries : this.#unackedEntries(),
        spool_bytes: s.spoolBytes,
        oldest_unacked_ms: s.oldestUnackedMs,
        retries: s.retries,
        dropped: s.dropped,
      })),
    );
  }

  #onWelcome(welcome: Welcome): void {
    // Batches up to last_seq were stored on an earlier connection (or by an earlier
    // run of this spool) whose acks were lost.
    for (const [seq, batch] of this.#unacked) {
      if (seq > welcome.last_seq) break;
      this.#unacked.delete(seq);
      if (!this.#o.spool) {
        this.#summary.acknowledged += batch.count;
        this.#summary.duplicates += batch.count;
      }
    }
    const spool = this.#o.spool;
    if (spool) {
      const seqs = spool.seqsUpTo(welcome.last_seq);
      const entries = spool.remove(seqs);
      this.#summary.acknowledged += entries;
      this.#summary.duplicates += entries;
      this.#pump();
      this.#updateSpoolStats();
    }
    const limit = Math.min(welcome.max_batch_bytes, welcome.max_frame_bytes - 1024);
    if (limit > 0 && limit < this.#o.batchBytes) this.#o.batchBytes = limit;
  }

  #onAck(ack: Ack): void {
    const batch = this.#unacked.get(ack.seq);
    if (!batch) return; // answered twice (a resend raced its ack): already counted
    this.#unacked.delete(ack.seq);
    this.#settled(ack.seq);
    const rejected = ack.rejected ?? [];
    if (ack.throttle) {
      this.#o.onEvent?.({ type: "throttled", waitMs: ack.throttle.wait_ms, reason: ack.throttle.reason });
    }
    this.#summary.acknowledged += batch.count - rejected.length;
    if (ack.duplicate) this.#summary.duplicates += batch.count;
    for (const r of rejected) this.#reject(batch, r.index, r.error, r.code);
  }

  #onNack(nack: Nack): void {
    const batch = nack.seq === null ? undefined : this.#unacked.get(nack.seq);
    if (!batch) throw new ServerProtocolError(`server refused a message: ${nack.error} (${nack.code})`);
    this.#unacked.delete(batch.seq);
    this.#settled(batch.seq);
    for (let i = 0; i < batch.count; i++) this.#reject(batch, i, `batch refused: ${nack.error}`);
  }

  /** A batch is answered: it leaves the spool, and the next ones may load. */
  #settled(seq: number): void {
    if (this.#o.spool) {
      this.#o.spool.remove([seq]);
      this.#pump();
    }
    this.#updateSpoolStats();
  }

  #reject(batch: Batch, index: number, error: string, code?: string): void {
    const rejection: Rejection = { source: batch.source[index] ?? "?", line: batch.lineNos[index] ?? 0, error };
    if (code) rejection.code = code;
    this.#summary.rejected.push(rejection);
    this.#o.onEvent?.({ type: "rejected", ...rejection });
  }
}

/**
 * Decodes a collector's v2 answers as they arrive, until the connection ends.
 *
 * @throws {ServerProtocolError} for an answer over 1 MiB
 */
export async function* readAnswers(conn: Transport["conn"]): AsyncGenerator<V2Message> {
  const decoder = new FrameDecoder({ maxFrameBytes: ANSWER_MAX_BYTES });
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return;
    for (const event of decoder.push(buffer.subarray(0, n))) {
      if (event.kind === "oversize") throw new ServerProtocolError(`answer of ${event.length} bytes is too large`);
      // The decoder may hand out views of `buffer`; decodeMessage copies what it keeps.
      yield decodeMessage(event.payload);
    }
  }
}
