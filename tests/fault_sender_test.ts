/**
 * Fault tests on the sending side, with real processes: the sender is killed
 * with SIGKILL and restarted with the same spool; a followed file is rotated
 * and the follower killed and restarted. Every entry must be stored exactly
 * once: the count and the set of unique ids both match.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { waitFor } from "./fault_support.ts";
import { readStored, ROOT, startTestCollector, testCerts } from "./test_support.ts";

function spawnSend(args: string[]): { child: Deno.ChildProcess; output: Promise<Deno.CommandOutput> } {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), "send", "--retries", "30", "--retry-max-delay", "1s", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return { child, output: child.output() };
}

function entryLines(from: number, to: number): string {
  let text = "";
  for (let i = from; i < to; i++) {
    text += JSON.stringify({ id: i, event: "record_access", note: "y".repeat(150) }) + "\n";
  }
  return text;
}

/** Asserts that `ids` holds each of 0..total-1 exactly once. */
function assertExactlyOnce(ids: number[], total: number): void {
  const unique = new Set(ids);
  assert.equal(unique.size, total, `${total - unique.size} ids missing`);
  assert.equal(ids.length, total, `${ids.length - total} duplicates`);
  for (let i = 0; i < total; i++) assert.ok(unique.has(i), `id ${i} missing`);
}

Deno.test("fault: the sender killed with SIGKILL mid-stream and restarted with its spool stores every entry exactly once", async () => {
  const TOTAL = 150_000;
  await using tc = await startTestCollector({ rotateEntries: 50_000 });
  const { caPath } = await testCerts();
  const dir = await Deno.makeTempDir({ prefix: "tlslog-sender-kill-" });
  try {
    const input = join(dir, "input.jsonl");
    await Deno.writeTextFile(input, entryLines(0, TOTAL));
    const args = [
      "--port",
      String(tc.port),
      "--ca",
      caPath,
      "--spool",
      join(dir, "spool"),
      "--batch-size",
      "500",
      input,
    ];
    const first = spawnSend(args);
    await waitFor("part of the data", () => tc.collector.stats().entries_written >= 20_000, 60_000);
    first.child.kill("SIGKILL");
    const killed = await first.output;
    assert.equal(killed.signal, "SIGKILL");
    const atKill = tc.collector.stats().entries_written;
    assert.ok(atKill < TOTAL, "the sender had finished before the kill; the test proves nothing");

    const second = spawnSend(args);
    const out = await second.output;
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stderr, /resuming at byte \d+ \(line \d+\) from the spool/);
    assertExactlyOnce((await readStored(tc.dataDir)).map((e) => e.id as number), TOTAL);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fault: --follow across a rename-and-recreate rotation and a kill -9 of the sender stores every line exactly once", async () => {
  await using tc = await startTestCollector({ rotateEntries: 10_000 });
  const { caPath } = await testCerts();
  const dir = await Deno.makeTempDir({ prefix: "tlslog-follow-" });
  try {
    const log = join(dir, "app.log");
    const args = ["--port", String(tc.port), "--ca", caPath, "--spool", join(dir, "spool"), "--follow", log];
    await Deno.writeTextFile(log, entryLines(0, 3000));
    const first = spawnSend(args);
    await waitFor("the first lines", () => tc.collector.stats().entries_written >= 3000, 60_000);
    await Deno.writeTextFile(log, entryLines(3000, 4000), { append: true });
    await waitFor("the appended lines", () => tc.collector.stats().entries_written >= 4000, 60_000);
    // Rotation: rename away, recreate at the same path.
    await Deno.rename(log, join(dir, "app.log.1"));
    await Deno.writeTextFile(log, entryLines(4000, 6000));
    await waitFor("the new file's lines", () => tc.collector.stats().entries_written >= 6000, 60_000);
    first.child.kill("SIGKILL");
    await first.output;
    // Written while no sender runs; then another rotation before it comes back.
    await Deno.writeTextFile(log, entryLines(6000, 7000), { append: true });
    await Deno.rename(log, join(dir, "app.log.2"));
    await Deno.writeTextFile(log, entryLines(7000, 8000));
    const second = spawnSend(args);
    await waitFor("every line", () => tc.collector.stats().entries_written >= 8000, 60_000);
    second.child.kill("SIGTERM");
    const out = await second.output;
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stderr, /rotated while stopped: draining .*app\.log\.2/);
    assertExactlyOnce((await readStored(tc.dataDir)).map((e) => e.id as number), 8000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
