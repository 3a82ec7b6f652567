/**
 * A TCP proxy between sender and collector cuts connections after random
 * byte counts, in the middle of TLS records and frames: the sender
 * reconnects and resends, the collector drops what it had already stored,
 * and every entry is stored exactly once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startChaosProxy } from "./chaos_proxy.ts";
import { readStored, startTestCollector, testCerts } from "./test_support.ts";
import { seededRandom } from "../client/healthcare_source.ts";
import { assertExactlyOnce, spawnTlslog, tempDir, within, writeEntries } from "./fault_support.ts";

const TOTAL = 100_000;

Deno.test("send of 100,000 entries through a proxy that cuts connections at random points: every entry stored exactly once", async () => {
  await using tc = await startTestCollector({ rotateEntries: 20_000 });
  await using dir = await tempDir("tlslog-cuts-");
  const { caPath } = await testCerts();
  const input = join(dir.path, "input.jsonl");
  // 100,000 entries of hard-to-compress hex come to ~6 MB on the wire: more than 15 cuts' worth.
  await writeEntries(input, TOTAL);
  const proxy = await startChaosProxy({
    targetPort: tc.port,
    random: seededRandom(20_240_611),
    minCutBytes: 20_000,
    maxCutBytes: 400_000,
    maxCuts: 15,
  });
  try {
    await using send = spawnTlslog([
      "send",
      "--port",
      String(proxy.port),
      "--ca",
      caPath,
      "--retries",
      "50",
      "--retry-max-delay",
      "1s",
      input,
    ]);
    const out = await within("send to finish", send.output, 50_000);
    assert.equal(out.code, 0, out.stderr);
    assert.ok(proxy.cuts >= 10, `only ${proxy.cuts} cuts`);
    // A cut that left part of a frame unread shows the frame was cut through, not between frames.
    assert.ok((tc.collector.stats().rejected_by_reason.truncated_frame ?? 0) >= 1, "no cut landed mid-frame");
  } finally {
    await proxy.close();
  }
  await tc.collector.close();
  assertExactlyOnce((await readStored(tc.dataDir)).map((entry) => entry.id), TOTAL);
});
