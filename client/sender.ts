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
import {
  type Ack,
  ALPN_V2,
  decodeMessage,
  encodeBatch,
  encodeHello,
  type Nack,
  type V2Message,
  type Welcome,
} from "../shared/protocol.ts";
import { CertificateError, type Transport } from "./tls_transport.ts";

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
}

/** Something the sender wants to tell its user. */
export type SenderEvent =
  | { type: "connected"; attempt: number }
  | { type: "retry"; attempt: number; delayMs: number; error: string }
  | { type: "rejected"; source: string; line: number; error: string };

/** A refused entry, located in the input. */
export interface Rejection {
  source: string;
  line: number;
  error: string;
}

/** What happened, as the summary prints it. */
export interface SendSummary {
  /** Entries handed to the sender. */
  entries: number;
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
}

/** Raised inside a session to end it and reconnect. */
class SessionError extends Error {
  override name = "SessionError";
}

const encoder = new TextEncoder();
const ANSWER_MAX_BYTES = 1 << 20;

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
  readonly #o: Required<Omit<SenderOptions, "onEvent" | "backoff">> & Pick<SenderOptions, "onEvent" | "backoff">;
  readonly #summary: SendSummary = {
    entries: 0,
    acknowledged: 0,
    rejected: [],
    duplicates: 0,
    batches: 0,
    rawBytes: 0,
    compressedBytes: 0,
    retries: 0,
    resentBatches: 0,
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
      ...options,
    };
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
   * room for more: the caller is slowed down to the pace of the acks.
   */
  async add(entries: string[], source: string, lineNos: number[]): Promise<void> {
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      this.#entries.push(entry);
      this.#sources.push(source);
      this.#lineNos.push(lineNos[i]!);
      this.#pendingBytes += entry.length + 1;
      this.#summary.entries++;
      if (this.#entries.length >= this.#o.batchSize || this.#pendingBytes >= this.#o.batchBytes) {
        this.#cutBatch();
        while (this.#unacked.size >= this.#o.maxInFlight && !this.#failure) {
          await new Promise<void>((resolve) => this.#windowWaiters.push(resolve));
        }
        if (this.#failure) throw this.#failure;
      }
    }
    if (this.#entries.length > 0 && this.#linger === undefined) {
      this.#linger = setTimeout(() => this.#cutBatch(), this.#o.lingerMs);
    }
  }

  /** Sends what is left and waits until every batch is answered. */
  async finish(): Promise<SendSummary> {
    this.#cutBatch();
    this.#finished = true;
    this.#wake();
    this.#loop ??= this.#run();
    await this.#loop;
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
    const seq = this.#nextSeq++;
    const batch: Batch = {
      seq,
      frame: encodeFrame(encodeBatch(seq, this.#entries.length, body)),
      count: this.#entries.length,
      source: this.#sources,
      lineNos: this.#lineNos,
      sends: 0,
    };
    this.#summary.batches++;
    this.#summary.rawBytes += raw.length;
    this.#summary.compressedBytes += body.length;
    this.#entries = [];
    this.#sources = [];
    this.#lineNos = [];
    this.#pendingBytes = 0;
    this.#unacked.set(seq, batch);
    this.#toSend.push(batch);
    this.#loop ??= this.#run();
    this.#wake();
  }

  #wake(): void {
    const wake = this.#wakeWriter;
    this.#wakeWriter = null;
    wake?.();
  }

  #releaseWindow(): void {
    const waiters = this.#windowWaiters;
    this.#windowWaiters = [];
    for (const w of waiters) w();
  }

  #done(): boolean {
    return this.#finished && this.#unacked.size === 0;
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
      if (first.value.type !== "welcome") {
        throw new ServerProtocolError(`expected WELCOME, got ${first.value.type}`);
      }
      this.#onWelcome(first.value.welcome);
      this.#toSend = [...this.#unacked.values()];
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
          if (this.#done()) break;
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
        // finish() came after the last ack: nothing more will arrive to end the read loop.
        conn.close();
        return;
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

  #onWelcome(welcome: Welcome): void {
    // Batches up to last_seq were stored on an earlier connection whose acks were lost.
    for (const [seq, batch] of this.#unacked) {
      if (seq > welcome.last_seq) break;
      this.#unacked.delete(seq);
      this.#summary.acknowledged += batch.count;
      this.#summary.duplicates += batch.count;
    }
    const limit = Math.min(welcome.max_batch_bytes, welcome.max_frame_bytes - 1024);
    if (limit > 0 && limit < this.#o.batchBytes) this.#o.batchBytes = limit;
  }

  #onAck(ack: Ack): void {
    const batch = this.#unacked.get(ack.seq);
    if (!batch) return; // answered twice (a resend raced its ack): already counted
    this.#unacked.delete(ack.seq);
    const rejected = ack.rejected ?? [];
    this.#summary.acknowledged += batch.count - rejected.length;
    if (ack.duplicate) this.#summary.duplicates += batch.count;
    for (const r of rejected) this.#reject(batch, r.index, r.error);
  }

  #onNack(nack: Nack): void {
    const batch = nack.seq === null ? undefined : this.#unacked.get(nack.seq);
    if (!batch) throw new ServerProtocolError(`server refused a message: ${nack.error} (${nack.code})`);
    this.#unacked.delete(batch.seq);
    for (let i = 0; i < batch.count; i++) this.#reject(batch, i, `batch refused: ${nack.error}`);
  }

  #reject(batch: Batch, index: number, error: string): void {
    const rejection = { source: batch.source[index] ?? "?", line: batch.lineNos[index] ?? 0, error };
    this.#summary.rejected.push(rejection);
    this.#o.onEvent?.({ type: "rejected", ...rejection });
  }
}

async function writeAll(conn: Transport["conn"], data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Decodes the server's answers as they arrive. */
async function* readAnswers(conn: Transport["conn"]): AsyncGenerator<V2Message> {
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
