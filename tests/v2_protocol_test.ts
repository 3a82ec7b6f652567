/**
 * Protocol v2 over real TLS: the pipelined sender, and a raw v2 client for
 * what the sender never does (resends, malformed batches, bombs).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Sender, type SenderEvent } from "../client/sender.ts";
import { CertificateError, connectTransport } from "../client/tls_transport.ts";
import { encodeFrame, FrameDecoder } from "../shared/frame_codec.ts";
import { ALPN_V2, decodeMessage, encodeBatch, encodeHello, encodePing, type V2Message } from "../shared/protocol.ts";
import { readStored, ROOT, startTestCollector, testCerts } from "./test_support.ts";

const enc = new TextEncoder();

function lines(from: number, n: number): string[] {
  return Array.from({ length: n }, (_, i) => JSON.stringify({ id: from + i, msg: "vitals recorded" }));
}

/** A raw v2 client: writes frames, reads decoded answers. */
class RawV2 {
  #decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
  #queue: V2Message[] = [];
  private constructor(readonly conn: Deno.TlsConn) {}

  static async connect(port: number): Promise<RawV2> {
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port,
      caCerts: [(await testCerts()).ca],
      alpnProtocols: [ALPN_V2],
    });
    assert.equal((await conn.handshake()).alpnProtocol, ALPN_V2);
    return new RawV2(conn);
  }

  async send(...payloads: Uint8Array[]): Promise<void> {
    const wire = new Uint8Array(payloads.flatMap((p) => [...encodeFrame(p)]));
    for (let off = 0; off < wire.length;) off += await this.conn.write(wire.subarray(off));
  }

  async next(): Promise<V2Message> {
    while (this.#queue.length === 0) {
      const buf = new Uint8Array(65536);
      const n = await this.conn.read(buf);
      if (n === null) throw new Error("closed");
      for (const e of this.#decoder.push(buf.subarray(0, n))) {
        if (e.kind === "frame") this.#queue.push(decodeMessage(e.payload.slice()));
      }
    }
    return this.#queue.shift()!;
  }
}

async function waitUntil(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const started = performance.now();
  while (!check()) {
    if (performance.now() - started > timeoutMs) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

function batch(seq: number, entries: string[]): Uint8Array {
  return encodeBatch(seq, entries.length, gzipSync(enc.encode(entries.map((e) => e + "\n").join(""))));
}

Deno.test("v2: the sender pipelines 20,000 entries in 40 batches; all stored once, in order", async () => {
  await using tc = await startTestCollector({ rotateEntries: 5000 });
  const { ca } = await testCerts();
  const sender = new Sender({
    connect: () => connectTransport({ host: "localhost", port: tc.port, caCert: ca, alpnProtocols: [ALPN_V2] }),
    batchSize: 500,
    maxInFlight: 8,
  });
  for (let i = 0; i < 20_000; i += 1000) await sender.add(lines(i, 1000), "gen", lines(i, 1000).map((_, k) => i + k));
  const summary = await sender.finish();
  assert.deepStrictEqual(
    [summary.entries, summary.acknowledged, summary.batches, summary.rejected.length, summary.retries],
    [20_000, 20_000, 40, 0, 0],
  );
  assert.deepStrictEqual((await readStored(tc.dataDir)).map((e) => e.id), Array.from({ length: 20_000 }, (_, i) => i));
  const s = tc.collector.stats();
  assert.deepStrictEqual([s.entries_received, s.entries_written, s.files_written], [20_000, 20_000, 4]);
  assert.ok(s.compression_ratio > 0 && s.compression_ratio < 0.5, `ratio ${s.compression_ratio}`);
});

Deno.test("v2: a resent batch is acknowledged as duplicate and not stored twice", async () => {
  await using tc = await startTestCollector();
  const a = await RawV2.connect(tc.port);
  await a.send(encodeHello({ stream: "stream-1" }), batch(1, lines(0, 3)), batch(2, lines(3, 2)));
  assert.equal((await a.next()).type, "welcome");
  assert.deepStrictEqual([await a.next(), await a.next()], [
    { type: "ack", ack: { seq: 1, stored: 3 } },
    { type: "ack", ack: { seq: 2, stored: 2 } },
  ]);
  a.conn.close();
  // A reconnect of the same stream learns what is stored and a resend is not stored again.
  const b = await RawV2.connect(tc.port);
  await b.send(encodeHello({ stream: "stream-1" }));
  const welcome = await b.next();
  assert.equal(welcome.type === "welcome" && welcome.welcome.last_seq, 2);
  await b.send(batch(2, lines(3, 2)), batch(3, lines(5, 1)));
  assert.deepStrictEqual([await b.next(), await b.next()], [
    { type: "ack", ack: { seq: 2, stored: 0, duplicate: true } },
    { type: "ack", ack: { seq: 3, stored: 1 } },
  ]);
  b.conn.close();
  assert.deepStrictEqual((await readStored(tc.dataDir)).map((e) => e.id), [0, 1, 2, 3, 4, 5]);
  assert.equal(tc.collector.stats().duplicates_suppressed, 2);
});

Deno.test("v2: bad entries are refused one by one; bombs and bad batches are refused whole; the connection lives", async () => {
  await using tc = await startTestCollector({ maxBatchBytes: 65536 });
  const c = await RawV2.connect(tc.port);
  await c.send(batch(1, ['{"ok":1}'])); // before HELLO
  assert.deepStrictEqual(await c.next(), {
    type: "nack",
    nack: { seq: 1, code: "no_hello", error: "BATCH before HELLO" },
  });
  await c.send(encodeHello({ stream: "s" }));
  await c.next();
  await c.send(batch(1, ['{"ok":1}', "[1]", '{"ok":2}']));
  assert.deepStrictEqual(await c.next(), {
    type: "ack",
    ack: {
      seq: 1,
      stored: 2,
      rejected: [{ index: 1, error: "not a JSON object (got an array)", code: "invalid_entry" }],
    },
  });
  await c.send(encodeBatch(2, 1, gzipSync(new Uint8Array(1 << 20))));
  const bomb = await c.next();
  assert.equal(bomb.type === "nack" && `${bomb.nack.seq} ${bomb.nack.code}`, "2 decompressed_too_large");
  await c.send(encodeBatch(3, 5, gzipSync(enc.encode('{"a":1}\n'))));
  const miscount = await c.next();
  assert.equal(miscount.type === "nack" && miscount.nack.code, "bad_batch");
  await c.send(new Uint8Array([0x55, 1, 2]), encodePing(77));
  const unknown = await c.next();
  assert.equal(unknown.type === "nack" && unknown.nack.code, "unknown_type");
  assert.deepStrictEqual(await c.next(), { type: "pong", nonce: 77 });
  c.conn.close();
  assert.deepStrictEqual(await readStored(tc.dataDir), [{ ok: 1 }, { ok: 2 }]);
  assert.deepStrictEqual(tc.collector.stats().rejected_by_reason, {
    no_hello: 1,
    invalid_entry: 1,
    decompressed_too_large: 1,
    bad_batch: 1,
    unknown_type: 1,
  });
});

Deno.test("v2: the sender refuses a server whose certificate another CA signed, without retrying", async () => {
  await using tc = await startTestCollector();
  const otherDir = await Deno.makeTempDir();
  try {
    const made = await new Deno.Command("sh", { args: [join(ROOT, "certs.sh"), otherDir], stdout: "null" }).output();
    assert.ok(made.success);
    const events: SenderEvent[] = [];
    const sender = new Sender({
      connect: () =>
        connectTransport({
          host: "localhost",
          port: tc.port,
          caCert: Deno.readTextFileSync(join(otherDir, "ca.crt")),
          alpnProtocols: [ALPN_V2],
        }),
      onEvent: (e) => events.push(e),
    });
    await sender.add(['{"a":1}'], "t", [1]);
    await assert.rejects(
      sender.finish(),
      (e: unknown) => e instanceof CertificateError && /not trusted/.test(e.message),
    );
    assert.deepStrictEqual(events, []);
    assert.deepStrictEqual(await readStored(tc.dataDir), []);
  } finally {
    await Deno.remove(otherDir, { recursive: true });
  }
});

Deno.test("v2: senders report their spool, retries and drops in STATUS; /api/stats sums them", async () => {
  await using tc = await startTestCollector();
  const { ca } = await testCerts();
  const dir = await Deno.makeTempDir();
  const { Spool } = await import("../client/spool.ts");
  const spool = Spool.open(dir);
  try {
    const sender = new Sender({
      connect: () => connectTransport({ host: "localhost", port: tc.port, caCert: ca, alpnProtocols: [ALPN_V2] }),
      spool,
      batchSize: 100,
    });
    await sender.addChunk(lines(0, 1000), "gen", lines(0, 1000).map((_, i) => i + 1), { pos: "end" });
    // While batches are unacknowledged the collector hears about them...
    const seen: number[] = [];
    const finished = sender.finish();
    await waitUntil(() => tc.collector.stats().senders.reporting > 0);
    seen.push(tc.collector.stats().senders.spool_entries);
    await finished;
    // ...and the last STATUS, sent before closing, says nothing is waiting.
    await waitUntil(() => tc.collector.stats().senders.spool_entries === 0);
    assert.ok(seen[0]! > 0 && seen[0]! <= 1000, `first STATUS reported ${seen[0]} entries`);
    assert.deepStrictEqual(tc.collector.stats().senders, {
      reporting: 1,
      spool_entries: 0,
      spool_bytes: 0,
      oldest_unacked_age_s: 0,
      retries: 0,
      dropped: 0,
    });
    assert.equal((await readStored(tc.dataDir)).length, 1000);
  } finally {
    spool.close();
    await Deno.remove(dir, { recursive: true });
  }
});
