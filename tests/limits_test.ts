/**
 * Limits on what comes in, over real TLS against an in-process collector: a
 * frame that stops half-way (slow loris), silent connections, too many
 * connections, deep nesting, and per-client rate limits. Each refusal must be
 * counted by its reason.
 *
 * @module
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { encodeFrame, FrameDecoder } from "../shared/frame_codec.ts";
import { ALPN_V2, decodeMessage, encodeBatch, encodeHello, type V2Message } from "../shared/protocol.ts";
import { readStored, runTlslog, startTestCollector, testCerts } from "./test_support.ts";
import { waitFor } from "./fault_support.ts";
import { writeAll } from "../shared/bytes.ts";

async function connect(port: number): Promise<Deno.TlsConn> {
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [(await testCerts()).ca],
    alpnProtocols: [ALPN_V2],
  });
  await conn.handshake();
  return conn;
}

/** Reads until the peer closes; resolves to the decoded messages. */
async function readToClose(conn: Deno.TlsConn): Promise<V2Message[]> {
  const decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
  const out: V2Message[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) return out;
    for (const e of decoder.push(buf.subarray(0, n))) {
      if (e.kind === "frame") out.push(decodeMessage(e.payload.slice()));
    }
  }
}

Deno.test("a frame that stops half-way is refused and its connection closed after --frame-timeout", async () => {
  await using tc = await startTestCollector({ frameTimeoutMs: 300 });
  const conn = await connect(tc.port);
  const frame = encodeFrame(encodeHello({ stream: "slow" }));
  await writeAll(conn, frame.subarray(0, 6));
  await readToClose(conn);
  conn.close();
  await waitFor("the refusal counted", () => tc.collector.stats().rejected_by_reason.frame_timeout === 1, 5_000);
});

Deno.test("a connection silent both ways is closed after --idle-timeout and counted", async () => {
  await using tc = await startTestCollector({ idleTimeoutMs: 300 });
  const conn = await connect(tc.port);
  await readToClose(conn);
  conn.close();
  await waitFor("the refusal counted", () => tc.collector.stats().rejected_by_reason.idle_timeout === 1, 5_000);
});

Deno.test("connections past --max-connections are closed at once and counted", async () => {
  await using tc = await startTestCollector({ maxConnections: 2 });
  const a = await connect(tc.port);
  const b = await connect(tc.port);
  await waitFor("two connections", () => tc.collector.stats().connections_active === 2, 5_000);
  const third = await Deno.connectTls({
    hostname: "localhost",
    port: tc.port,
    caCerts: [(await testCerts()).ca],
    alpnProtocols: [ALPN_V2],
  });
  await third.handshake().then(() => readToClose(third), () => []);
  third.close();
  await waitFor(
    "the refusal counted",
    () => (tc.collector.stats().rejected_by_reason.too_many_connections ?? 0) >= 1,
    5_000,
  );
  // The two within the limit still work.
  await writeAll(a, encodeFrame(encodeHello({ stream: "a" })));
  a.close();
  b.close();
});

Deno.test("an entry nested deeper than 64 levels is refused on its own; its batch's other entries are stored", async () => {
  await using tc = await startTestCollector();
  const conn = await connect(tc.port);
  const deep = "[".repeat(100) + "]".repeat(100);
  const body = ['{"id":1}', `{"id":2,"x":${deep}}`, '{"id":3}'].join("\n") + "\n";
  await writeAll(
    conn,
    new Uint8Array([
      ...encodeFrame(encodeHello({ stream: "deep" })),
      ...encodeFrame(encodeBatch(1, 3, gzipSync(body))),
    ]),
  );
  const decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
  const answers: V2Message[] = [];
  const buf = new Uint8Array(65536);
  while (answers.length < 2) {
    const n = await conn.read(buf);
    if (n === null) break;
    for (const e of decoder.push(buf.subarray(0, n))) {
      if (e.kind === "frame") answers.push(decodeMessage(e.payload.slice()));
    }
  }
  conn.close();
  const ack = answers[1]!;
  assert.equal(ack.type, "ack");
  if (ack.type !== "ack") return;
  assert.equal(ack.ack.stored, 2);
  assert.equal(ack.ack.rejected?.[0]?.index, 1);
  assert.match(ack.ack.rejected?.[0]?.error ?? "", /nested deeper than 64 levels/);
  assert.deepStrictEqual((await readStored(tc.dataDir)).map((e) => e.id), [1, 3]);
});

Deno.test("a client over --rate-limit is slowed and told why; everything is still stored once", async () => {
  await using tc = await startTestCollector({ rateLimit: { entriesPerSecond: 2_000 } });
  const { caPath } = await testCerts();
  const input = Array.from({ length: 6_000 }, (_, i) => JSON.stringify({ id: i })).join("\n") + "\n";
  const r = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath, "--batch-size", "500"], {
    stdin: input,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /the collector slows this sender down: over the rate limit of 2000 entries\/s/);
  assert.ok(tc.collector.stats().throttled > 0);
  const ids = (await readStored(tc.dataDir)).map((e) => e.id as number);
  assert.equal(ids.length, 6_000);
  assert.equal(new Set(ids).size, 6_000);
});

Deno.test("a v1 client over --rate-limit is slowed too (it has no way to be told); every entry is stored", async () => {
  await using tc = await startTestCollector({ rateLimit: { entriesPerSecond: 500 } });
  const conn = await Deno.connectTls({ hostname: "localhost", port: tc.port, caCerts: [(await testCerts()).ca] });
  await conn.handshake();
  const frames = Array.from({ length: 800 }, (_, i) => encodeFrame(gzipSync(JSON.stringify({ id: i }))));
  const wire = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) {
    wire.set(f, at);
    at += f.length;
  }
  const writing = writeAll(conn, wire);
  const decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
  let answers = 0;
  const buf = new Uint8Array(65536);
  while (answers < 800) {
    const n = await conn.read(buf);
    if (n === null) break;
    answers += decoder.push(buf.subarray(0, n)).filter((e) => e.kind === "frame").length;
  }
  await writing;
  conn.close();
  assert.equal(answers, 800);
  assert.ok(tc.collector.stats().throttled > 0, "never slowed");
  assert.equal((await readStored(tc.dataDir)).length, 800);
});
