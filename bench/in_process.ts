/**
 * Scenarios whose clients run inside the bench process: many concurrent
 * {@linkcode Sender}s, and a raw protocol v2 client that paces its batches and
 * times each one's ACK.
 *
 * @module
 */
import { gzipSync } from "node:zlib";
import { Sender, type SendSummary } from "../client/sender.ts";
import { connectTransport, type Transport } from "../client/tls_transport.ts";
import { encodeFrame, FrameDecoder } from "../shared/frame_codec.ts";
import { ALPN_V2, decodeMessage, encodeBatch, encodeHello, type V2Message } from "../shared/protocol.ts";
import { writeAll } from "../shared/bytes.ts";

const encoder = new TextEncoder();

/** Where the collector listens and how to trust it. */
export interface Target {
  port: number;
  /** CA certificate, PEM. */
  caPem: string;
}

function connect(target: Target): Promise<Transport> {
  return connectTransport({ host: "localhost", port: target.port, caCert: target.caPem, alpnProtocols: [ALPN_V2] });
}

// ---------------------------------------------------------------------------
// Many clients.

/** Outcome of {@linkcode runManyClients}. */
export interface ManyClientsResult {
  /** From the start of the first client to the last client's finish(), ms. */
  wallMs: number;
  /** Each client's time from the common start to its finish(), ms, sorted. */
  clientMs: number[];
  acknowledged: number;
  rejected: number;
  duplicates: number;
  retries: number;
  resentBatches: number;
}

/**
 * Runs `clients` {@linkcode Sender}s at once, each with its own connection
 * and stream id, client `i` sending `lines[i * perClient ..][..perClient]`.
 * Everything is prepared before the clock starts; then every client adds its
 * entries and calls finish() together.
 */
export async function runManyClients(
  target: Target,
  lines: string[],
  clients: number,
  perClient: number,
): Promise<ManyClientsResult> {
  if (lines.length < clients * perClient) throw new Error(`need ${clients * perClient} lines, have ${lines.length}`);
  const work = Array.from({ length: clients }, (_, i) => {
    const entries = lines.slice(i * perClient, (i + 1) * perClient);
    return {
      entries,
      lineNos: entries.map((_, j) => j + 1),
      sender: new Sender({ connect: () => connect(target), stream: `bench-client-${i + 1}`, gzipLevel: 1 }),
    };
  });
  const started = performance.now();
  const clientMs: number[] = [];
  const summaries: SendSummary[] = await Promise.all(work.map(async (w, i) => {
    await w.sender.add(w.entries, `client-${i + 1}`, w.lineNos);
    const summary = await w.sender.finish();
    clientMs.push(performance.now() - started);
    return summary;
  }));
  const wallMs = performance.now() - started;
  const sum = (f: (s: SendSummary) => number) => summaries.reduce((a, s) => a + f(s), 0);
  return {
    wallMs,
    clientMs: clientMs.sort((a, b) => a - b),
    acknowledged: sum((s) => s.acknowledged),
    rejected: sum((s) => s.rejected.length),
    duplicates: sum((s) => s.duplicates),
    retries: sum((s) => s.retries),
    resentBatches: sum((s) => s.resentBatches),
  };
}

// ---------------------------------------------------------------------------
// Ack latency at a steady rate.

/** Options of {@linkcode runAckLatency}. */
export interface AckLatencyOptions {
  /** Entries per BATCH. */
  batchEntries: number;
  /** A BATCH is sent every this many ms. */
  intervalMs: number;
  /** BATCH messages to send. */
  batches: number;
  gzipLevel: number;
}

/** Outcome of {@linkcode runAckLatency}. */
export interface AckLatencyResult {
  /** From the first BATCH written to the last ACK read, ms. */
  wallMs: number;
  entries: number;
  /** Per batch, ACK read minus BATCH write started, ms, sorted. */
  latenciesMs: number[];
  /** Largest delay of a BATCH write behind its schedule, ms. */
  maxScheduleLagMs: number;
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A raw v2 client on one connection: HELLO, then BATCH 1, 2, ... of
 * `batchEntries` lines each (gzip'd with node:zlib before the clock starts),
 * one every `intervalMs` on an absolute schedule. The time each BATCH write
 * starts and each ACK arrives (ACKs come in order and name their seq) gives
 * the ack latency of every batch.
 */
export async function runAckLatency(
  target: Target,
  lines: string[],
  options: AckLatencyOptions,
): Promise<AckLatencyResult> {
  const { batchEntries, intervalMs, batches, gzipLevel } = options;
  if (lines.length < batches * batchEntries) {
    throw new Error(`need ${batches * batchEntries} lines, have ${lines.length}`);
  }
  const frames = Array.from({ length: batches }, (_, b) => {
    const text = lines.slice(b * batchEntries, (b + 1) * batchEntries).join("\n") + "\n";
    const body = gzipSync(encoder.encode(text), { level: gzipLevel });
    return encodeFrame(encodeBatch(b + 1, batchEntries, new Uint8Array(body.buffer, body.byteOffset, body.length)));
  });
  const sentAt = new Float64Array(batches + 1);
  const ackAt = new Float64Array(batches + 1);

  const transport = await connect(target);
  const { conn } = transport;
  try {
    if (transport.alpnProtocol !== ALPN_V2) {
      throw new Error(`server did not choose ${ALPN_V2} (ALPN: ${transport.alpnProtocol ?? "none"})`);
    }
    const messages = readMessages(conn);
    await writeAll(conn, encodeFrame(encodeHello({ stream: `bench-latency-${crypto.randomUUID()}`, client: "bench" })));
    const first = await messages.next();
    if (first.done || first.value.type !== "welcome") {
      throw new Error(`expected WELCOME, got ${first.done ? "end of stream" : first.value.type}`);
    }

    // ACK reader: in order, each naming the next seq.
    const acks = (async () => {
      let expected = 1;
      while (expected <= batches) {
        const next = await messages.next();
        if (next.done) throw new Error(`connection closed after ${expected - 1} of ${batches} ACKs`);
        const m = next.value;
        if (m.type === "nack") throw new Error(`NACK for seq ${m.nack.seq}: ${m.nack.error} (${m.nack.code})`);
        if (m.type !== "ack") throw new Error(`unexpected ${m.type}`);
        if (m.ack.seq !== expected) throw new Error(`ACK for seq ${m.ack.seq}, expected ${expected}`);
        if (m.ack.stored !== batchEntries || (m.ack.rejected?.length ?? 0) > 0) {
          throw new Error(`ACK ${m.ack.seq} stored ${m.ack.stored} of ${batchEntries}`);
        }
        ackAt[expected] = performance.now();
        expected++;
      }
    })();
    let readerFailed: unknown = null;
    acks.catch((err) => readerFailed = err);

    const started = performance.now();
    let maxLag = 0;
    for (let b = 0; b < batches && readerFailed === null; b++) {
      const due = started + b * intervalMs;
      const wait = due - performance.now();
      if (wait > 0.5) await sleep(wait);
      const now = performance.now();
      maxLag = Math.max(maxLag, now - due);
      sentAt[b + 1] = now;
      await writeAll(conn, frames[b]!);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      acks,
      new Promise((_, reject) => timer = setTimeout(() => reject(new Error("ACKs missing after 30 s")), 30_000)),
    ]).finally(() => clearTimeout(timer));
    const latenciesMs = Array.from({ length: batches }, (_, i) => ackAt[i + 1]! - sentAt[i + 1]!).sort((a, b) => a - b);
    return {
      wallMs: ackAt[batches]! - started,
      entries: batches * batchEntries,
      latenciesMs,
      maxScheduleLagMs: maxLag,
    };
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

/** Decodes the server's messages as they arrive. */
async function* readMessages(conn: Transport["conn"]): AsyncGenerator<V2Message> {
  const decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return;
    for (const event of decoder.push(buffer.subarray(0, n))) {
      if (event.kind === "oversize") throw new Error(`server message of ${event.length} bytes`);
      yield decodeMessage(event.payload);
    }
  }
}
