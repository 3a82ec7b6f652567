import assert from "node:assert/strict";
import type { StatsSnapshot } from "../shared/stats_snapshot.ts";
import { createDashboardApp, DASHBOARD_COOKIE, formatValue, generateDashboardToken } from "./dashboard_app.ts";

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
  throttled: 0,
  current_file: "tlslog-00000124.jsonl",
  senders: { reporting: 1, spool_entries: 10, spool_bytes: 300, oldest_unacked_age_s: 1.5, retries: 2, dropped: 0 },
  privacy: null,
  tls: null,
  memory: {
    target_bytes: 192 * 1048576,
    rss_bytes: 150 * 1048576,
    peak_rss_bytes: 210 * 1048576,
    collections: 42,
    over_target_after_collection: 0,
    collection_ms: 900,
    can_collect: true,
    can_trim: true,
  },
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
  const app = createDashboardApp({ stats: () => stats, token: null });
  const res = await app.request("/api/stats");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.match(res.headers.get("content-type")!, /application\/json/);
  assert.deepStrictEqual(await res.json(), stats);
});

Deno.test("GET / renders every tile with current values and refreshes itself", async () => {
  const app = createDashboardApp({ stats: () => stats, refreshMs: 3000, token: null });
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
      ["memory.rss_bytes", "150 MB"],
      ["memory.collections", "42"],
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
  const app = createDashboardApp({ stats: () => stats, token: null });
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
  const app = createDashboardApp({
    stats: () => ({ ...stats, current_file: "<script>x</script>" }),
    token: null,
  });
  const html = await (await app.request("/")).text();
  assert.ok(!html.includes("<script>x</script>"));
  assert.match(html, /&#60;script&#62;x/);
});

Deno.test("GET /compliance shows the collector's de-identification check, on or off", async () => {
  const off = await (await createDashboardApp({ stats: () => stats, token: null }).request("/compliance")).text();
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
  const res = await createDashboardApp({ stats: () => ({ ...stats, privacy }), token: null }).request("/compliance");
  assert.equal(res.status, 200);
  const on = await res.text();
  assert.match(on, /on \(--require-deidentified reject\)/);
  assert.match(on, /Findings by detector<\/th><td>ssn 1, email 1</);
  assert.match(on, /Entries refused by reason<\/th><td>bad_gzip 3</);
  assert.match(on, /Key ids in use<\/th><td>k1a2b3c \(8 tokens\)</);
  assert.match(on, /Redactions by senders<\/th><td>PHONE 2</);
});

// --- Access control and security headers ---

const TOKEN = generateDashboardToken();
const bearer = (token: string) => ({ headers: { Authorization: `Bearer ${token}` } });
const withCookie = (token: string) => ({ headers: { Cookie: `${DASHBOARD_COOKIE}=${token}` } });

function securedApp(onAccess?: Parameters<typeof createDashboardApp>[0]["onAccess"]) {
  return createDashboardApp({ stats: () => stats, token: TOKEN, onAccess });
}

function assertSecurityHeaders(res: Response, what: string): void {
  assert.equal(
    res.headers.get("content-security-policy"),
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
      "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    what,
  );
  assert.equal(res.headers.get("x-content-type-options"), "nosniff", what);
  assert.equal(res.headers.get("x-frame-options"), "DENY", what);
  assert.equal(res.headers.get("referrer-policy"), "no-referrer", what);
}

Deno.test("generateDashboardToken() makes 32 random bytes as base64url without padding", () => {
  const a = generateDashboardToken(), b = generateDashboardToken();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, b);
});

Deno.test("createDashboardApp() refuses an empty token or one with spaces or control characters", () => {
  for (const token of ["", "two words", "tab\there", "é"]) {
    assert.throws(() => createDashboardApp({ stats: () => stats, token }), TypeError, JSON.stringify(token));
  }
});

Deno.test("without the token every path but /healthz answers 401 with WWW-Authenticate and how to pass it", async () => {
  const app = securedApp();
  for (const path of ["/", "/api/stats", "/compliance", "/dashboard.js", "/dashboard.css", "/nope"]) {
    const res = await app.request(path);
    assert.equal(res.status, 401, path);
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="tlslog dashboard"', path);
    assert.equal(res.headers.get("cache-control"), "no-store", path);
    assertSecurityHeaders(res, path);
    const body = await res.text();
    assert.ok(!body.includes(TOKEN), path);
    if (path.startsWith("/api/")) {
      assert.match(res.headers.get("content-type")!, /application\/json/);
      assert.match(JSON.parse(body).error, /Authorization: Bearer <token>/);
    } else {
      assert.match(res.headers.get("content-type")!, /text\/plain/);
      assert.match(body, /^401 Unauthorized: the tlslog dashboard needs its access token/);
      assert.match(body, /\/\?token=<token>/);
    }
  }
  const health = await app.request("/healthz");
  assert.equal(health.status, 200);
  assert.equal(await health.text(), "ok");
  assertSecurityHeaders(health, "/healthz");
});

Deno.test("the token as a Bearer header or as the cookie opens every path", async () => {
  const app = securedApp();
  for (const init of [bearer(TOKEN), withCookie(TOKEN), { headers: { Authorization: `bearer  ${TOKEN} ` } }]) {
    for (const path of ["/", "/api/stats", "/compliance", "/dashboard.js", "/dashboard.css", "/healthz"]) {
      const res = await app.request(path, init);
      assert.equal(res.status, 200, `${path} ${JSON.stringify(init)}`);
      await res.body?.cancel();
    }
  }
  assert.deepStrictEqual(await (await app.request("/api/stats", bearer(TOKEN))).json(), stats);
});

Deno.test("a wrong token, of the same or another length, or in the wrong place, answers 401", async () => {
  const app = securedApp();
  const sameLength = (TOKEN[0] === "A" ? "B" : "A") + TOKEN.slice(1);
  const lastDiffers = TOKEN.slice(0, -1) + (TOKEN.at(-1) === "A" ? "B" : "A");
  const wrong = [sameLength, lastDiffers, TOKEN.slice(0, -1), TOKEN + "x", "x", TOKEN.toLowerCase()];
  for (const token of wrong) {
    for (const init of [bearer(token), withCookie(token)]) {
      const res = await app.request("/api/stats", init);
      assert.equal(res.status, 401, `${token} ${JSON.stringify(init)}`);
      await res.body?.cancel();
    }
  }
  // A wrong Bearer header is named as such.
  const res = await app.request("/api/stats", bearer(sameLength));
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="tlslog dashboard", error="invalid_token"');
  await res.body?.cancel();
  for (
    const [path, init] of [
      // Not a Bearer header, the cookie under another name, an empty cookie.
      ["/api/stats", { headers: { Authorization: `Basic ${btoa(`x:${TOKEN}`)}` } }],
      ["/api/stats", { headers: { Authorization: TOKEN } }],
      ["/api/stats", { headers: { Cookie: `other=${TOKEN}` } }],
      ["/api/stats", { headers: { Cookie: `${DASHBOARD_COOKIE}=` } }],
      // ?token= is taken on the pages only, never on the API or the assets.
      [`/api/stats?token=${TOKEN}`, {}],
      [`/dashboard.js?token=${TOKEN}`, {}],
    ] as const
  ) {
    const r = await app.request(path, init);
    assert.equal(r.status, 401, `${path} ${JSON.stringify(init)}`);
    await r.body?.cancel();
  }
});

Deno.test("?token= on / and /compliance redirects (303) without it and sets an HttpOnly SameSite=Strict cookie", async () => {
  const accesses: { path: string; status: number }[] = [];
  const app = securedApp(({ path, status }) => accesses.push({ path, status }));
  for (const path of ["/", "/compliance"]) {
    const res = await app.request(`${path}?token=${encodeURIComponent(TOKEN)}`);
    assert.equal(res.status, 303, path);
    assert.equal(res.headers.get("location"), path);
    assert.equal(res.headers.get("cache-control"), "no-store");
    assertSecurityHeaders(res, `${path} 303`);
    const cookie = res.headers.get("set-cookie")!;
    assert.equal(cookie, `${DASHBOARD_COOKIE}=${TOKEN}; Path=/; HttpOnly; SameSite=Strict`);
    // What the browser sends back opens the page and the API.
    const sent = cookie.split(";")[0]!;
    for (const next of [path, "/api/stats", "/dashboard.js"]) {
      const page = await app.request(next, { headers: { Cookie: `theme=dark; ${sent}` } });
      assert.equal(page.status, 200, next);
      await page.body?.cancel();
    }
  }
  // Other query parameters stay; the token does not reach the access log.
  const kept = await app.request(`/?a=1&token=${TOKEN}&b=2`);
  assert.equal(kept.headers.get("location"), "/?a=1&b=2");
  assert.ok(accesses.some((a) => a.path === "/" && a.status === 303));
  assert.ok(accesses.every((a) => !a.path.includes(TOKEN)));
  // Secure only over https.
  const https = await app.request(`https://dash.example/?token=${TOKEN}`);
  assert.match(https.headers.get("set-cookie")!, /; Secure(;|$)/);
  // A wrong token in the link sets nothing.
  const wrong = await app.request(`/?token=${TOKEN.slice(1)}`);
  assert.equal(wrong.status, 401);
  assert.equal(wrong.headers.get("set-cookie"), null);
  await wrong.body?.cancel();
});

Deno.test("security headers on 200, 401 and 404 answers; no-store on the API, pages and refusals", async () => {
  const app = securedApp();
  const cases: [path: string, init: RequestInit, status: number, cache: string][] = [
    ["/", bearer(TOKEN), 200, "no-store"],
    ["/compliance", bearer(TOKEN), 200, "no-store"],
    ["/api/stats", bearer(TOKEN), 200, "no-store"],
    ["/healthz", {}, 200, "no-store"],
    ["/dashboard.js", bearer(TOKEN), 200, "private, max-age=300"],
    ["/dashboard.css", bearer(TOKEN), 200, "private, max-age=300"],
    ["/api/stats", {}, 401, "no-store"],
    ["/", {}, 401, "no-store"],
    ["/nope", bearer(TOKEN), 404, "no-store"],
    ["/api/nope", bearer(TOKEN), 404, "no-store"],
  ];
  for (const [path, init, status, cache] of cases) {
    const res = await app.request(path, init);
    assert.equal(res.status, status, path);
    assert.equal(res.headers.get("cache-control"), cache, path);
    assertSecurityHeaders(res, `${path} ${status}`);
    await res.body?.cancel();
  }
  // Without a token (library use) the headers are there all the same.
  const open = createDashboardApp({ stats: () => stats, token: null });
  for (const path of ["/", "/api/stats", "/nope"]) {
    const res = await open.request(path);
    assertSecurityHeaders(res, `open ${path}`);
    await res.body?.cancel();
  }
});

Deno.test("token: null leaves every path open, as before", async () => {
  const app = createDashboardApp({ stats: () => stats, token: null });
  for (const path of ["/", "/api/stats", "/compliance", "/dashboard.js", "/dashboard.css", "/healthz"]) {
    const res = await app.request(path);
    assert.equal(res.status, 200, path);
    await res.body?.cancel();
  }
});

Deno.test("the pages work under the CSP: no inline script, inline style or style attribute", async () => {
  const app = securedApp();
  for (const path of ["/", "/compliance"]) {
    const html = await (await app.request(path, bearer(TOKEN))).text();
    assert.ok(!/\sstyle\s*=/i.test(html), `${path} has a style attribute`);
    assert.ok(!/<style[\s>]/i.test(html), `${path} has a <style> element`);
    assert.ok(!/\son[a-z]+\s*=/i.test(html), `${path} has an inline event handler`);
    for (const script of html.match(/<script[^>]*>/gi) ?? []) {
      assert.match(script, /^<script src="\/[^"]+">$/, `${path}: ${script}`);
    }
    assert.ok(!/<script[^>]*>[^<]/i.test(html), `${path} has an inline script`);
    assert.ok(!/javascript:/i.test(html), `${path} has a javascript: URL`);
  }
});
