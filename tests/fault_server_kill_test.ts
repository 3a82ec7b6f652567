/**
 * The collector is killed with SIGKILL five times during one send of 200,000
 * entries and started again each time on the same port and data directory.
 * Recovery cuts what was written but not committed, the commit log brings
 * back each stream's progress, and the sender resends what was not
 * acknowledged: every entry is stored exactly once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readStored, type ServeProcess, spawnServe, testCerts } from "./test_support.ts";
import { verifyStore } from "../server/store_verifier.ts";
import { parseVerifierKey } from "../server/signed_note.ts";
import {
  assertExactlyOnce,
  countStoredLines,
  freePort,
  spawnTlslog,
  storedBytes,
  tempDir,
  waitFor,
  within,
  writeEntries,
} from "./fault_support.ts";

const TOTAL = 200_000;
const KILLS = 5;

Deno.test("send of 200,000 entries: the collector is killed with SIGKILL 5 times; every entry is stored exactly once", async () => {
  await using dir = await tempDir("tlslog-kill-");
  const dataDir = join(dir.path, "data");
  const input = join(dir.path, "input.jsonl");
  const { caPath } = await testCerts();
  const port = freePort();
  const serveArgs = ["--port", String(port), "--data-dir", dataDir, "--rotate-entries", "20000"];
  let server: ServeProcess | null = null;
  try {
    server = await spawnServe(serveArgs);
    const lineBytes = await writeEntries(input, TOTAL);
    await using send = spawnTlslog([
      "send",
      "--port",
      String(port),
      "--ca",
      caPath,
      "--retries",
      "50",
      "--retry-max-delay",
      "1s",
      "--batch-size",
      "500",
      input,
    ]);

    // Kill i comes once i/(KILLS + 2) of the entries are on disk, so the last one leaves
    // two sevenths still to send: the send runs at ~200k entries/s on this machine.
    const storedAtKill: number[] = [];
    for (let kill = 1; kill <= KILLS; kill++) {
      const threshold = Math.floor((TOTAL * kill) / (KILLS + 2)) * lineBytes;
      const current = server;
      await waitFor(
        `${threshold / lineBytes} entries on disk before kill ${kill}`,
        async () => (await storedBytes(dataDir)) >= threshold,
        60_000,
        10,
      ).catch((err) => {
        // Say what the collector said: a stalled send is only explained there.
        throw new Error(`${(err as Error).message}; serve's stderr:\n${current.stderr()}`);
      });
      const status = await server.stop("SIGKILL");
      assert.equal(status.signal, "SIGKILL");
      storedAtKill.push(await countStoredLines(dataDir));
      server = await spawnServe(serveArgs);
    }
    assert.ok(
      storedAtKill.every((n) => n < TOTAL),
      `a kill came after every entry was stored, so it did not interrupt the send: ${storedAtKill}`,
    );

    const out = await within("send to finish", send.output, 45_000);
    assert.equal(out.code, 0, out.stderr);
    // Each kill broke a live connection, so the sender reconnected at least once per kill.
    const retries = out.stderr.match(/connection failed .*; retry \d+ in/g) ?? [];
    assert.ok(retries.length >= KILLS, out.stderr);
    assert.equal((await server.stop("SIGTERM")).code, 0);

    assertExactlyOnce((await readStored(dataDir)).map((entry) => entry.id), TOTAL);
    // The hash chain survived the kills too: its files were rebuilt where the chainer was behind.
    const { dir: certDir } = await testCerts();
    const report = await verifyStore(dataDir, {
      verifier: parseVerifierKey(await Deno.readTextFile(join(certDir, "checkpoint.pub"))),
    });
    assert.ok(report.ok, report.damage.map((d) => `${d.file}:${d.line} ${d.kind}: ${d.message}`).join("\n"));
    assert.equal(report.lastSeq, TOTAL);
  } finally {
    await server?.stop("SIGKILL");
  }
});
