import assert from "node:assert/strict";
import { ServerStats } from "./server_stats.ts";

Deno.test("ServerStats.snapshot() reports counters, ratio and uptime", () => {
  let now = Date.UTC(2026, 0, 1);
  const stats = new ServerStats(() => now);
  stats.entriesReceived = 12;
  stats.recordWritten(10);
  stats.bytesCompressed = 250;
  stats.bytesUncompressed = 1000;
  stats.recordFrameRejected("bad_gzip");
  stats.recordFrameRejected("bad_gzip");
  stats.recordEntryRejected("invalid_entry");
  now += 2500;
  const s = stats.snapshot();
  assert.deepStrictEqual(s, {
    entries_received: 12,
    entries_written: 10,
    entries_rejected: 1,
    duplicates_suppressed: 0,
    bytes_compressed: 250,
    bytes_uncompressed: 1000,
    compression_ratio: 0.25,
    entries_per_second: 1,
    connections_active: 0,
    connections_total: 0,
    frames_received: 0,
    frames_rejected: 2,
    rejected_by_reason: { bad_gzip: 2, invalid_entry: 1 },
    files_written: 0,
    fsyncs: 0,
    throttled: 0,
    current_file: null,
    senders: { reporting: 0, spool_entries: 0, spool_bytes: 0, oldest_unacked_age_s: 0, retries: 0, dropped: 0 },
    privacy: null,
    evidence: null,
    tls: null,
    memory: null,
    uptime_s: 2.5,
    started_at: "2026-01-01T00:00:00.000Z",
  });
});

Deno.test("ServerStats.snapshot() rates entries over the last 10 whole seconds", () => {
  let now = 1_000_000;
  const stats = new ServerStats(() => now);
  assert.equal(stats.snapshot().compression_ratio, 0);
  for (let i = 0; i < 30; i++) {
    stats.recordWritten(100);
    now += 1000;
  }
  assert.equal(stats.snapshot().entries_per_second, 100);
  now += 20_000;
  assert.equal(stats.snapshot().entries_per_second, 0);
});
