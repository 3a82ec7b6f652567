import assert from "node:assert/strict";
import { ALPN_V2 } from "../shared/protocol.ts";
import { RetriesExhaustedError, Sender } from "./sender.ts";
import { connectTransport } from "./tls_transport.ts";

/** A port on 127.0.0.1 where nothing listens: bound, then released. */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("Sender retries a refused connection on the backoff schedule, then gives up", async () => {
  const port = closedPort();
  const slept: number[] = [];
  const sender = new Sender({
    connect: () => connectTransport({ host: "127.0.0.1", port, alpnProtocols: [ALPN_V2] }),
    retries: 5,
    random: () => 0.5,
    backoff: { maxMs: 8000 },
    sleep: (ms) => {
      slept.push(ms);
      return Promise.resolve();
    },
  });
  await sender.add(['{"a":1}'], "t", [1]);
  await assert.rejects(
    sender.finish(),
    (e: unknown) =>
      e instanceof RetriesExhaustedError &&
      /gave up after 5 retries: cannot connect.*1 batches \(1 entries\)/.test(e.message),
  );
  assert.deepStrictEqual(slept, [1000, 2000, 4000, 8000, 8000]);
  assert.equal(sender.summary.retries, 5);
});

Deno.test("Sender with no entries finishes without connecting", async () => {
  let connects = 0;
  const sender = new Sender({
    connect: () => {
      connects++;
      return Promise.reject(new Error("unreachable"));
    },
  });
  assert.deepStrictEqual(await sender.finish(), {
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
  });
  assert.equal(connects, 0);
});

Deno.test("Sender.finish() returns when every batch was acknowledged before it was called", async () => {
  const { startTestCollector, testCerts } = await import("../tests/test_support.ts");
  await using tc = await startTestCollector();
  const { ca } = await testCerts();
  const sender = new Sender({
    connect: () => connectTransport({ host: "localhost", port: tc.port, caCert: ca, alpnProtocols: [ALPN_V2] }),
    batchSize: 2,
  });
  await sender.add(['{"a":1}', '{"a":2}'], "t", [1, 2]);
  // Wait until the full batch is acknowledged, before finish() is called.
  while (sender.summary.acknowledged < 2) await new Promise((r) => setTimeout(r, 10));
  const summary = await sender.finish();
  assert.deepStrictEqual([summary.entries, summary.acknowledged, summary.retries], [2, 2, 0]);
});

Deno.test("Sender with a full spool drops the newest or the oldest batches, counting every entry", async () => {
  const { Spool } = await import("./spool.ts");
  for (const whenFull of ["drop-newest", "drop-oldest"] as const) {
    const dir = await Deno.makeTempDir();
    const spool = Spool.open(dir);
    try {
      const port = closedPort();
      const dropped: number[] = [];
      const sender = new Sender({
        connect: () => connectTransport({ host: "127.0.0.1", port, alpnProtocols: [ALPN_V2] }),
        spool,
        spoolMaxBytes: 200,
        whenFull,
        batchSize: 10,
        maxInFlight: 1,
        retries: 1000,
        // The collector stays unreachable: the sender never gets past its first backoff.
        sleep: () => new Promise<void>(() => {}),
        onEvent: (e) => e.type === "dropped" && dropped.push(e.entries),
      });
      for (let chunk = 0; chunk < 5; chunk++) {
        const lines = Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: chunk * 10 + i, pad: "x".repeat(40) }));
        await sender.addChunk(lines, "t", lines.map((_, i) => i + 1), { pos: String(chunk) });
      }
      const s = sender.summary;
      assert.equal(s.entries, 50);
      assert.ok(s.dropped > 0, `${whenFull}: nothing dropped`);
      assert.equal(dropped.reduce((a, b) => a + b, 0), s.dropped);
      assert.equal(s.spoolEntries + s.dropped, 50, whenFull);
      assert.ok(s.spoolBytes <= 200 + 200, `${whenFull}: spool holds ${s.spoolBytes} bytes`);
      const kept = spool.load(0, 100).map((b) => b.seq);
      // drop-newest keeps the first batches; drop-oldest keeps the in-flight first one and the latest.
      assert.deepStrictEqual(kept[0], 1, whenFull);
      if (whenFull === "drop-oldest") assert.equal(kept.at(-1), 5);
      else assert.ok(kept.at(-1)! < 5);
      assert.equal(spool.getMeta("pos"), "4");
    } finally {
      spool.close();
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("Sender with a full spool in block mode waits for room and drops nothing", async () => {
  const { Spool } = await import("./spool.ts");
  const dir = await Deno.makeTempDir();
  const spool = Spool.open(dir);
  try {
    const port = closedPort();
    const sender = new Sender({
      connect: () => connectTransport({ host: "127.0.0.1", port, alpnProtocols: [ALPN_V2] }),
      spool,
      spoolMaxBytes: 200,
      whenFull: "block",
      batchSize: 10,
      maxInFlight: 1,
      retries: 1000,
      sleep: () => new Promise<void>(() => {}),
    });
    const chunk = (n: number) =>
      Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: n * 10 + i, pad: "x".repeat(40) }));
    let added = 0;
    for (let n = 0; n < 5; n++) {
      const adding = sender.addChunk(chunk(n), "t", chunk(n).map((_, i) => i + 1), { pos: String(n) }).then(() =>
        added++
      );
      const settled = await Promise.race([adding.then(() => true), new Promise((r) => setTimeout(() => r(false), 50))]);
      if (!settled) break;
    }
    assert.ok(added >= 1 && added < 5, `${added} chunks went in while the spool was full`);
    assert.equal(sender.summary.dropped, 0);
    assert.equal(spool.stats.entries, added * 10);
  } finally {
    spool.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Sender with a rate limit delays entries (burst of one batch) and delivers every one", async () => {
  const { startTestCollector, testCerts, readStored } = await import("../tests/test_support.ts");
  await using tc = await startTestCollector();
  const { ca } = await testCerts();
  const sender = new Sender({
    connect: () => connectTransport({ host: "localhost", port: tc.port, caCert: ca, alpnProtocols: [ALPN_V2] }),
    batchSize: 100,
    rateLimit: 400,
  });
  const lines = Array.from({ length: 300 }, (_, i) => JSON.stringify({ id: i }));
  const started = performance.now();
  // In one call: the sender lets it in piece by piece.
  await sender.add(lines, "t", lines.map((_, i) => i + 1));
  const summary = await sender.finish();
  const elapsed = performance.now() - started;
  // Burst 100 (one batch), then 200 more at 400/s: at least 0.5 s. Only a lower bound: a deliberate delay.
  assert.ok(elapsed >= 480, `took ${elapsed} ms`);
  assert.ok(summary.rateLimitWaitMs >= 400, `waited ${summary.rateLimitWaitMs} ms`);
  assert.deepStrictEqual([summary.entries, summary.acknowledged, summary.dropped, summary.rateLimit], [
    300,
    300,
    0,
    400,
  ]);
  const ids = (await readStored(tc.dataDir)).map((e) => e.id);
  assert.deepStrictEqual(ids, lines.map((_, i) => i));
});

Deno.test("Sender rate-limit waits end on a failure and on the stop signal", async () => {
  // The connection fails for good at once: the waiting add() rejects with that failure.
  const failing = new Sender({
    connect: () => Promise.reject(new Error("down")),
    retries: 0,
    batchSize: 1,
    rateLimit: 0.5,
  });
  const started = performance.now();
  await assert.rejects(failing.add(['{"a":1}', '{"a":2}'], "t", [1, 2]), RetriesExhaustedError);
  assert.ok(performance.now() - started < 1500);
  await assert.rejects(failing.finish(), RetriesExhaustedError);

  // A stop ends the waits: the rest is taken at once (to be delivered), nothing is dropped.
  const stop = new AbortController();
  const stopped = new Sender({
    connect: () => Promise.reject(new Error("down")),
    retries: 1000,
    sleep: () => new Promise<void>(() => {}),
    batchSize: 1,
    rateLimit: 0.5,
    signal: stop.signal,
  });
  const adding = stopped.add(['{"a":1}', '{"a":2}', '{"a":3}'], "t", [1, 2, 3]);
  setTimeout(() => stop.abort(), 50);
  await adding;
  assert.equal(stopped.summary.entries, 3);
  assert.ok(stopped.summary.rateLimitWaitMs < 1500);
});

Deno.test("Sender with a rate limit and a spool takes each chunk whole, with its read position", async () => {
  const { Spool } = await import("./spool.ts");
  const dir = await Deno.makeTempDir();
  const spool = Spool.open(dir);
  try {
    const sender = new Sender({
      connect: () => Promise.reject(new Error("down")),
      retries: 1000,
      sleep: () => new Promise<void>(() => {}),
      spool,
      batchSize: 10,
      rateLimit: 100,
    });
    const chunk = (n: number) => Array.from({ length: 20 }, (_, i) => JSON.stringify({ id: n * 20 + i }));
    const started = performance.now();
    await sender.addChunk(chunk(0), "t", chunk(0).map((_, i) => i + 1), { pos: "0" });
    assert.deepStrictEqual([spool.stats.entries, spool.getMeta("pos")], [20, "0"]);
    await sender.addChunk(chunk(1), "t", chunk(1).map((_, i) => i + 21), { pos: "1" });
    // Burst 10, then 30 more at 100/s.
    assert.ok(performance.now() - started >= 280, `took ${performance.now() - started} ms`);
    assert.deepStrictEqual([spool.stats.entries, spool.getMeta("pos")], [40, "1"]);
  } finally {
    spool.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Sender refuses a rate limit that is not a positive number", () => {
  for (const rateLimit of [0, -1, NaN, Infinity]) {
    assert.throws(
      () => new Sender({ connect: () => Promise.reject(new Error("unused")), rateLimit }),
      (e: unknown) => e instanceof RangeError && /rateLimit must be a finite number/.test(e.message),
    );
  }
});
