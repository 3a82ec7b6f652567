/**
 * The collector is down when the send starts and comes up 10 s later: the
 * sender backs off (1, 2, 4, 8 s, each ±10 %) instead of giving up, then
 * delivers everything exactly once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readStored, type ServeProcess, spawnServe, testCerts } from "./test_support.ts";
import { assertExactlyOnce, freePort, spawnTlslog, tempDir, within, writeEntries } from "./fault_support.ts";

const TOTAL = 20_000;
const DOWN_MS = 10_000;

Deno.test("send while the collector is down for the first 10 s: it backs off with growing delays, then delivers everything", async () => {
  await using dir = await tempDir("tlslog-down-");
  const dataDir = join(dir.path, "data");
  const input = join(dir.path, "input.jsonl");
  const { caPath } = await testCerts();
  const port = freePort();
  let server: ServeProcess | null = null;
  try {
    await writeEntries(input, TOTAL);
    await using send = spawnTlslog(["send", "--port", String(port), "--ca", caPath, "--retries", "10", input]);
    // The outage is the scenario, not a wait for an event: nothing listens during it.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exitedEarly = await Promise.race([
      send.output.then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), DOWN_MS)),
    ]);
    clearTimeout(timer);
    assert.equal(exitedEarly, false, "send exited while the collector was down");
    server = await spawnServe(["--port", String(port), "--data-dir", dataDir, "--rotate-entries", "20000"]);

    const out = await within("send to finish", send.output, 30_000);
    assert.equal(out.code, 0, out.stderr);
    const retries = [...out.stderr.matchAll(/connection failed \(.*\); retry (\d+) in ([\d.]+) s/g)].map((m) => ({
      attempt: Number(m[1]),
      seconds: Number(m[2]),
    }));
    // Started 10 s into a 1+2+4+8 s schedule, the collector is found on the fourth or fifth attempt.
    assert.ok(retries.length >= 3, out.stderr);
    assert.deepStrictEqual(retries.map((r) => r.attempt), retries.map((_, i) => i + 1));
    for (const [i, { seconds }] of retries.entries()) {
      const nominal = 2 ** i;
      assert.ok(
        Math.abs(seconds - nominal) <= nominal * 0.1 + 0.05,
        `retry ${i + 1} in ${seconds} s, not ${nominal} s ±10 %`,
      );
      if (i > 0) assert.ok(seconds > retries[i - 1]!.seconds, `retry delays do not grow: ${out.stderr}`);
    }
    assert.match(out.stderr, new RegExp(`connected after ${retries.length} failed attempts`));
    assert.equal((await server.stop("SIGTERM")).code, 0);

    assertExactlyOnce((await readStored(dataDir)).map((entry) => entry.id), TOTAL);
  } finally {
    await server?.stop("SIGKILL");
  }
});
