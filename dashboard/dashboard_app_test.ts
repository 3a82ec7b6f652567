import assert from "node:assert/strict";
import type { StatsSnapshot } from "../shared/stats_snapshot.ts";
import { createDashboardApp, formatValue } from "./dashboard_app.ts";

const stats: StatsSnapshot = {
  entries_received: 1234,
  entries_written: 1230,
  entries_rejected: 4,
  duplicates_suppressed: 0,
  bytes_compressed: 100,
  bytes_uncompressed: 400,
  compression_ratio: 0.25,
  entries_per_second: 12.5,
  connections_active: 2,
  connections_total: 9,
  frames_received: 20,
  frames_rejected: 3,
  rejected_by_reason: { bad_gzip: 3 },
  files_written: 124,
  fsyncs: 60,
  current_file: "tlslog-00000124.jsonl",
  senders: { reporting: 1, spool_entries: 10, spool_bytes: 300, oldest_unacked_age_s: 1.5, retries: 2, dropped: 0 },
  privacy: null,
  evidence: {
    chain_size: 1234,
    checkpoints_written: 7,
    last_checkpoint_size: 1200,
    last_checkpoint_at: "2026-01-01T00:01:00.000Z",
    checkpoint_copy_failures: 0,
    files_compressed: 3,
    files_deleted: 1,
    entries_pruned: 10,
    archive_failures: 0,
    encrypted: true,
  },
  uptime_s: 3725,
  started_at: "2026-01-01T00:00:00.000Z",
};

Deno.test("GET /api/stats answers the stats as JSON, not cached", async () => {
  const app = createDashboardApp({ stats: () => stats });
  const res = await app.request("/api/stats");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.match(res.headers.get("content-type")!, /application\/json/);
  assert.deepStrictEqual(await res.json(), stats);
});

Deno.test("GET / renders every tile with current values and refreshes itself", async () => {
  const app = createDashboardApp({ stats: () => stats, refreshMs: 3000 });
  const res = await app.request("/");
  assert.equal(res.status, 200);
  const html = await res.text();
  for (
    const [id, text] of [
      ["entries_received", "1,234"],
      ["entries_per_second", "12.5"],
      ["compression_ratio", "25.0 %"],
      ["connections_active", "2"],
      ["frames_rejected", "3"],
      ["files_written", "124"],
      ["uptime_s", "1h 2m 5s"],
      ["senders.spool_entries", "10"],
      ["senders.oldest_unacked_age_s", "1s"],
      ["fsyncs", "60"],
    ]
  ) {
    assert.match(html, new RegExp(`id="${id}"[^>]*>${text}<`), id);
  }
  assert.match(html, /data-refresh-ms="3000"/);
  assert.match(html, /<script src="\/dashboard.js"><\/script>/);
  assert.match(html, /<noscript><meta http-equiv="refresh" content="3">/);
  const js = await app.request("/dashboard.js");
  assert.match(js.headers.get("content-type")!, /javascript/);
  assert.match(await js.text(), /fetch\("\/api\/stats"/);
});

Deno.test("GET /healthz answers ok and unknown paths 404 with JSON", async () => {
  const app = createDashboardApp({ stats: () => stats });
  assert.equal(await (await app.request("/healthz")).text(), "ok");
  const missing = await app.request("/nope");
  assert.equal(missing.status, 404);
  assert.deepStrictEqual(await missing.json(), { error: "no route GET /nope" });
});

Deno.test("formatValue() formats ratios, durations and counts", () => {
  assert.deepStrictEqual(
    [formatValue(0, "ratio"), formatValue(59, "duration"), formatValue(61, "duration"), formatValue(1e6, "int")],
    ["–", "59s", "1m 1s", "1,000,000"],
  );
});

Deno.test("GET / escapes a file name that holds markup", async () => {
  const app = createDashboardApp({ stats: () => ({ ...stats, current_file: "<script>x</script>" }) });
  const html = await (await app.request("/")).text();
  assert.ok(!html.includes("<script>x</script>"));
  assert.match(html, /&#60;script&#62;x/);
});

Deno.test("GET /compliance shows the collector's de-identification check, on or off", async () => {
  const off = await (await createDashboardApp({ stats: () => stats }).request("/compliance")).text();
  assert.match(off, /Check of arriving entries<\/th><td>off \(start serve with --require-deidentified/);
  const privacy = {
    mode: "reject" as const,
    entries_checked: 10,
    entries_identifiable: 2,
    rejected: 2,
    quarantined: 0,
    redacted: 0,
    by_detector: { ssn: 1, email: 1 },
    fields_pseudonymised: 8,
    key_ids: { k1a2b3c: 8 },
    redactions: { PHONE: 2 },
  };
  const res = await createDashboardApp({ stats: () => ({ ...stats, privacy }) }).request("/compliance");
  assert.equal(res.status, 200);
  const on = await res.text();
  assert.match(on, /on \(--require-deidentified reject\)/);
  assert.match(on, /Findings by detector<\/th><td>ssn 1, email 1</);
  assert.match(on, /Entries refused by reason<\/th><td>bad_gzip 3</);
  assert.match(on, /Key ids in use<\/th><td>k1a2b3c \(8 tokens\)</);
  assert.match(on, /Redactions by senders<\/th><td>PHONE 2</);
});
