/**
 * The memory governor in a real `tlslog serve`: a flood of gzip bombs over
 * real TLS leaves hundreds of MB of dead inflated buffers behind. With the
 * governor off the collector's resident set climbs with them; with
 * `--memory-target` it stays near the target, and /api/stats says how often
 * it collected.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { spawnServe, testCerts } from "./test_support.ts";
import { freePort, tempDir } from "./fault_support.ts";
import { writeAll } from "../shared/bytes.ts";
import { encodeFrame, FrameDecoder } from "../shared/frame_codec.ts";

const BOMB = gzipSync(new Uint8Array(4 << 20)); // 4 MiB of zeros in about 4 KB
const CONNECTIONS = 4;
const BOMBS_PER_CONNECTION = 200;

/** Sends the bombs on one v1 connection and waits for every answer. */
async function flood(port: number, ca: string): Promise<number> {
  const conn = await Deno.connectTls({ hostname: "localhost", port, caCerts: [ca] });
  const wire = encodeFrame(BOMB);
  const writing = (async () => {
    for (let i = 0; i < BOMBS_PER_CONNECTION; i++) await writeAll(conn, wire);
  })();
  let answers = 0;
  const decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
  const buf = new Uint8Array(65536);
  while (answers < BOMBS_PER_CONNECTION) {
    const n = await conn.read(buf);
    if (n === null) break;
    for (const event of decoder.push(buf.subarray(0, n))) {
      if (event.kind !== "frame") continue;
      assert.equal(JSON.parse(new TextDecoder().decode(event.payload)).status, "error");
      answers++;
    }
  }
  await writing;
  conn.close();
  return answers;
}

async function run(target: string): Promise<{ hwmMb: number; memory: Record<string, number | boolean> }> {
  await using dir = await tempDir("tlslog-memory-");
  const c = await testCerts();
  const token = crypto.randomUUID().replaceAll("-", "");
  const serve = await spawnServe([
    "--data-dir",
    dir.path,
    "--max-batch-bytes",
    "4MiB",
    "--memory-target",
    target,
    "--dashboard-port",
    String(freePort()),
    "--dashboard-token",
    token,
  ]);
  try {
    const answers = await Promise.all(Array.from({ length: CONNECTIONS }, () => flood(serve.port, c.ca)));
    assert.deepEqual(answers, Array(CONNECTIONS).fill(BOMBS_PER_CONNECTION));
    const status = await Deno.readTextFile(`/proc/${serve.child.pid}/status`);
    const hwmMb = Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)![1]) / 1024;
    const res = await fetch(new URL("api/stats", serve.dashboardUrl!), {
      headers: { authorization: `Bearer ${token}` },
    });
    const stats = await res.json();
    assert.equal(stats.frames_rejected, CONNECTIONS * BOMBS_PER_CONNECTION);
    return { hwmMb, memory: stats.memory };
  } finally {
    assert.equal((await serve.stop()).code, 0);
  }
}

Deno.test({
  name: "memory governor: a flood of gzip bombs stays near --memory-target, and climbs without it",
  ignore: Deno.build.os !== "linux",
}, async () => {
  const off = await run("0");
  const on = await run("128MiB");
  const seen = `governed ${on.hwmMb.toFixed(0)} MB ${JSON.stringify(on.memory)}; off ${off.hwmMb.toFixed(0)} MB`;
  assert.equal(off.memory.collections, 0, seen);
  assert.ok((on.memory.collections as number) > 0, seen);
  assert.equal(on.memory.target_bytes, 128 * 1024 * 1024, seen);
  // 3.2 GB of inflated garbage: without the governor it piles up; with it the peak stays within 64 MB of the target.
  assert.ok(on.hwmMb < 128 + 64, seen);
  assert.ok(off.hwmMb > on.hwmMb + 32, seen);
});
