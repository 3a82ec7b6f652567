/**
 * The collector is killed with SIGKILL in the middle of a send and started
 * again on the same port and data directory: the sender retries, resends what
 * was not acknowledged, and every entry ends up stored.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { listDataFiles } from "../server/rotating_store.ts";
import { freePort, waitFor } from "./fault_support.ts";
import { readStored, ROOT, runTlslog, spawnServe, testCerts } from "./test_support.ts";

const TOTAL = 100_000;

Deno.test("send of 100,000 entries survives the collector being killed with SIGKILL and restarted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-restart-" });
  const dataDir = join(dir, "data");
  const input = join(dir, "input.jsonl");
  const { caPath } = await testCerts();
  const port = freePort();
  try {
    const lines = Array.from(
      { length: TOTAL },
      (_, i) => JSON.stringify({ id: i, event: "lab_result", department: "radiology", note: "x".repeat(200) }),
    );
    await Deno.writeTextFile(input, lines.join("\n") + "\n");
    const serveArgs = ["--port", String(port), "--data-dir", dataDir, "--rotate-entries", "2000"];
    let server = await spawnServe(serveArgs);
    const sender = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(ROOT, "main.ts"),
        "send",
        "--port",
        String(port),
        "--ca",
        caPath,
        "--retries",
        "30",
        "--retry-max-delay",
        "2s",
        "--batch-size",
        "500",
        input,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const senderOutput = sender.output();

    // Kill the collector once part of the data is stored, i.e. mid-stream.
    await waitFor("the first files", async () => (await listDataFiles(dataDir).catch(() => [])).length >= 3, 60_000);
    const killed = await server.stop("SIGKILL");
    assert.equal(killed.signal, "SIGKILL");
    const storedBeforeKill = (await readStored(dataDir)).length;
    assert.ok(storedBeforeKill < TOTAL, "the kill came after the send had finished; the test proves nothing");

    server = await spawnServe(serveArgs);
    const out = await senderOutput;
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stderr, /connection failed .*; retry 1 in/);
    assert.match(stderr, /connected after \d+ failed attempts; resending unacknowledged batches/);
    assert.equal((await server.stop("SIGTERM")).code, 0);

    const ids = (await readStored(dataDir)).map((e) => e.id as number);
    const unique = new Set(ids);
    assert.equal(unique.size, TOTAL, `${TOTAL - unique.size} entries missing`);
    for (let i = 0; i < TOTAL; i++) assert.ok(unique.has(i), `entry ${i} missing`);
    // The commit log brings back what was stored before the kill: nothing is stored twice.
    assert.equal(ids.length, TOTAL, `${ids.length - TOTAL} duplicates`);
    assert.match(new TextDecoder().decode(out.stdout), /acknowledged\s+100,000\n/);
    // And the store's hash chain and checkpoints verify after the kill, the restart and the stop.
    const verified = await runTlslog(["verify", dataDir, "--pubkey", join((await testCerts()).dir, "checkpoint.pub")]);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    assert.match(verified.stdout, /^OK: .*entries 1\.\.100000 /m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
