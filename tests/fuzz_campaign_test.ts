/**
 * The fuzz campaign, short: at least 5,000 malformed inputs over at least 64
 * connections (v1 and v2 frames of every malformed kind, truncated frames,
 * garbage before and inside TLS) against a `tlslog serve` child process,
 * while `tlslog send` ships 5,000 numbered entries. The collector must stay
 * up and answer a probe every second, stay under 256 MB of RSS, store every
 * good entry exactly once, count at least the refusals the fuzzer can prove
 * it processed, and exit 0 on SIGTERM. The long run (100,000 inputs and
 * 100,000 entries) is `deno task bench --only fuzz`.
 */
import assert from "node:assert/strict";
import { formatCampaignReport, runCampaign } from "./fuzz_support.ts";

Deno.test("fuzz campaign (short): 5,000 malformed inputs over 64 connections while 5,000 entries are sent", async () => {
  const report = await runCampaign({
    inputs: 5_000,
    connections: 64,
    entries: 5_000,
    sends: 2,
    seed: 20_251_122,
    deadlineMs: 25_000,
    // The bound, held by serve's memory governor (--memory-target, default 192 MiB).
    rssLimitBytes: 256 * 1024 * 1024,
  });
  const text = formatCampaignReport(report);
  if (report.failures.length > 0 || report.findings.length > 0) console.error(text);
  assert.deepStrictEqual(report.failures, [], text);
  assert.ok(report.fuzz.connections.total >= 64, `${report.fuzz.connections.total} connections`);
});
