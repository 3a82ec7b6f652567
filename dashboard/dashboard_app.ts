/**
 * The dashboard: a Hono app built from a stats source. It never listens by
 * itself; the caller serves `app.fetch`, and tests call `app.request`.
 *
 * Access needs the dashboard token (all but `/healthz`), and every answer
 * carries security headers (CSP, nosniff, no framing, no referrer, no-store).
 *
 * @module
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import type { Context } from "hono";
import { getCookie, setCookie } from "hono/cookie";
import type { StatsSnapshot } from "../shared/stats_snapshot.ts";

/** Options for {@linkcode createDashboardApp}. */
export interface DashboardOptions {
  /** Reads the collector's current statistics. */
  stats: () => StatsSnapshot;
  /** How often the page refreshes itself. Default 2000 ms. */
  refreshMs?: number;
  /**
   * The access token, required for everything but `/healthz`; see
   * {@linkcode generateDashboardToken}. Accepted as `Authorization: Bearer <token>`,
   * as the cookie {@linkcode DASHBOARD_COOKIE}, or once as `?token=<token>` on
   * `GET /` and `GET /compliance` (answered with a redirect that sets the cookie).
   * `null` turns access control off (tests and library use only).
   */
  token: string | null;
  /**
   * Told of every request after it is answered (the collector's audit trail).
   * `path` never holds the query, so a `?token=` is never reported.
   */
  onAccess?: (access: { method: string; path: string; status: number; remote: string | null }) => void;
}

/** The cookie that carries the dashboard token once a browser has opened `/?token=…`. */
export const DASHBOARD_COOKIE = "tlslog_dashboard";

/** A new random dashboard token: 32 random bytes, base64url without padding (43 characters). */
export function generateDashboardToken(): string {
  return randomBytes(32).toString("base64url");
}

/** The headers of every answer, whatever its status. */
const SECURITY_HEADERS: Record<string, string> = {
  "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
};

/** How long a browser may keep the page's script and style (they only change with the program). */
const STATIC_CACHE = "private, max-age=300";

/**
 * A constant-time check of a presented token against `token`: both are run
 * through HMAC-SHA256 under a per-process random key and the equal-length
 * digests compared with `timingSafeEqual`, so neither the token's length nor
 * its first differing byte shows in the time taken.
 */
function tokenChecker(token: string): (candidate: string) => boolean {
  const key = randomBytes(32);
  const digest = (text: string) => createHmac("sha256", key).update(text, "utf8").digest();
  const expected = digest(token);
  return (candidate) => timingSafeEqual(digest(candidate), expected);
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
function bearerToken(header: string | undefined): string | null {
  const match = header ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header) : null;
  return match?.[1] ?? null;
}

/** Paths where a `?token=` is taken (pages a human opens; each answers with a redirect without it). */
const TOKEN_LINK_PATHS = new Set(["/", "/compliance"]);

function unauthorized(c: Context, invalidBearer: boolean): Response {
  c.header("WWW-Authenticate", `Bearer realm="tlslog dashboard"${invalidBearer ? ', error="invalid_token"' : ""}`);
  c.header("Cache-Control", "no-store");
  if (c.req.path.startsWith("/api/")) {
    return c.json({
      error: 'unauthorized: send the dashboard token as the header "Authorization: Bearer <token>"',
    }, 401);
  }
  return c.text(
    "401 Unauthorized: the tlslog dashboard needs its access token.\n" +
      "Open /?token=<token> once in this browser (tlslog serve prints the full link when it starts; " +
      "the token is the one given with --dashboard-token or generated at start),\n" +
      'or send the header "Authorization: Bearer <token>".\n',
    401,
  );
}

/** The tiles of the page: label, stats field (dotted for nested ones), and how to show it. */
const TILES: [label: string, field: string, format: "int" | "rate" | "ratio" | "duration" | "mb"][] = [
  ["Entries received", "entries_received", "int"],
  ["Entries written", "entries_written", "int"],
  ["Entries / s", "entries_per_second", "rate"],
  ["Compression ratio", "compression_ratio", "ratio"],
  ["Active connections", "connections_active", "int"],
  ["Connections total", "connections_total", "int"],
  ["Rejected frames", "frames_rejected", "int"],
  ["Rejected entries", "entries_rejected", "int"],
  ["Duplicates suppressed", "duplicates_suppressed", "int"],
  ["Files written", "files_written", "int"],
  ["fsyncs", "fsyncs", "int"],
  ["Senders reporting", "senders.reporting", "int"],
  ["Waiting in sender spools", "senders.spool_entries", "int"],
  ["Oldest unacknowledged", "senders.oldest_unacked_age_s", "duration"],
  ["Sender retries", "senders.retries", "int"],
  ["Dropped by senders", "senders.dropped", "int"],
  ["Chained entries", "evidence.chain_size", "int"],
  ["Checkpoints signed", "evidence.checkpoints_written", "int"],
  ["Deleted by retention", "evidence.entries_pruned", "int"],
  ["Memory (resident)", "memory.rss_bytes", "mb"],
  ["Memory collections", "memory.collections", "int"],
  ["Uptime", "uptime_s", "duration"],
];

/** The value at a dotted path of the stats. */
function valueAt(stats: StatsSnapshot, path: string): unknown {
  return path.split(".").reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], stats);
}

function renderCompliance(stats: StatsSnapshot): string {
  const p = stats.privacy;
  const rows: [string, string][] = p
    ? [
      ["Check of arriving entries", `on (--require-deidentified ${p.mode})`],
      ["Entries checked", formatValue(p.entries_checked, "int")],
      ["Entries still identifiable", formatValue(p.entries_identifiable, "int")],
      ["Rejected", formatValue(p.rejected, "int")],
      ["Quarantined", formatValue(p.quarantined, "int")],
      ["Redacted by the collector", formatValue(p.redacted, "int")],
      [
        "Findings by detector",
        Object.entries(p.by_detector).map(([k, v]) => `${k} ${v}`).join(", ") || "none",
      ],
      ["Fields pseudonymised by senders", formatValue(p.fields_pseudonymised, "int")],
      ["Key ids in use", Object.entries(p.key_ids).map(([k, v]) => `${k} (${v} tokens)`).join(", ") || "none"],
      ["Redactions by senders", Object.entries(p.redactions).map(([k, v]) => `${k} ${v}`).join(", ") || "none"],
    ]
    : [["Check of arriving entries", "off (start serve with --require-deidentified reject|quarantine|redact)"]];
  rows.push(
    ["Entries written", formatValue(stats.entries_written, "int")],
    [
      "Entries refused by reason",
      Object.entries(stats.rejected_by_reason).map(([k, v]) => `${k} ${v}`).join(", ") || "none",
    ],
  );
  const body = rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("\n");
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>tlslog compliance</title><link rel="stylesheet" href="/dashboard.css"></head>
<body>
<header><h1>tlslog compliance</h1><a href="/">dashboard</a></header>
<main class="report"><table id="privacy">
${body}
</table>
<p>Key ids in use, pseudonymised fields and redactions in the stored data: <code>tlslog report DATA_DIR</code>.</p></main>
</body>
</html>`;
}

/** Formats one stats value for display. */
export function formatValue(value: unknown, format: "int" | "rate" | "ratio" | "duration" | "mb"): string {
  const n = typeof value === "number" ? value : 0;
  switch (format) {
    case "int":
      return n.toLocaleString("en-US");
    case "rate":
      return n.toLocaleString("en-US", { maximumFractionDigits: 1 });
    case "ratio":
      return n === 0 ? "–" : `${(n * 100).toFixed(1)} %`;
    case "mb":
      return `${(n / 1048576).toFixed(0)} MB`;
    case "duration": {
      const s = Math.floor(n);
      const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
      return h > 0 ? `${h}h ${m}m ${s % 60}s` : m > 0 ? `${m}m ${s % 60}s` : `${s}s`;
    }
  }
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function renderPage(stats: StatsSnapshot, refreshMs: number): string {
  const tiles = TILES.map(([label, field, format]) =>
    `<div class="tile"><div class="label">${escapeHtml(label)}</div>` +
    `<div class="value" id="${field}" data-format="${format}">${
      escapeHtml(formatValue(valueAt(stats, field), format))
    }</div></div>`
  ).join("\n");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tlslog collector</title>
<noscript><meta http-equiv="refresh" content="${Math.ceil(refreshMs / 1000)}"></noscript>
<link rel="stylesheet" href="/dashboard.css">
</head>
<body data-refresh-ms="${refreshMs}">
<header><h1>tlslog collector</h1><span id="status">live</span><a href="/compliance">compliance</a></header>
<main class="tiles">
${tiles}
</main>
<footer>Current file: <span id="current_file">${escapeHtml(stats.current_file ?? "none")}</span>
 · started <span id="started_at">${escapeHtml(stats.started_at)}</span>
 · updated <span id="updated_at">${escapeHtml(new Date().toISOString())}</span></footer>
<script src="/dashboard.js"></script>
</body>
</html>`;
}

const CSS = `body{font-family:system-ui,sans-serif;margin:0;background:#0f172a;color:#e2e8f0}
header{display:flex;align-items:center;gap:1rem;padding:1rem 1.5rem;background:#1e293b}
h1{font-size:1.25rem;margin:0}#status{font-size:.8rem;padding:.1rem .5rem;border-radius:1rem;background:#166534}
#status.stale{background:#991b1b}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(12rem,1fr));gap:1rem;padding:1.5rem}
.tile{background:#1e293b;border-radius:.5rem;padding:1rem}.label{font-size:.8rem;color:#94a3b8}
.value{font-size:1.6rem;font-variant-numeric:tabular-nums;margin-top:.3rem}
footer{padding:0 1.5rem 1.5rem;color:#94a3b8;font-size:.8rem}a{color:#93c5fd;margin-left:auto}
.report{padding:1.5rem}.report table{border-collapse:collapse}.report th,.report td{text-align:left;padding:.4rem 1rem;
border-bottom:1px solid #334155}.report th{color:#94a3b8;font-weight:normal}`;

// Served as a file, not inline, so a strict Content-Security-Policy can forbid inline script.
const JS = `"use strict";
const fmt = {
  int: (n) => n.toLocaleString("en-US"),
  rate: (n) => n.toLocaleString("en-US", { maximumFractionDigits: 1 }),
  ratio: (n) => n === 0 ? "\\u2013" : (n * 100).toFixed(1) + " %",
  mb: (n) => (n / 1048576).toFixed(0) + " MB",
  duration: (n) => { const s = Math.floor(n), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h > 0 ? h + "h " + m + "m " + (s % 60) + "s" : m > 0 ? m + "m " + (s % 60) + "s" : s + "s"; },
};
async function refresh() {
  const status = document.getElementById("status");
  try {
    const res = await fetch("/api/stats", { cache: "no-store" });
    if (!res.ok) throw new Error(res.status);
    const stats = await res.json();
    for (const el of document.querySelectorAll(".value")) {
      const value = el.id.split(".").reduce((v, k) => v?.[k], stats);
      el.textContent = fmt[el.dataset.format](value ?? 0);
    }
    document.getElementById("current_file").textContent = stats.current_file ?? "none";
    document.getElementById("updated_at").textContent = new Date().toISOString();
    status.textContent = "live"; status.className = "";
  } catch (err) {
    status.textContent = err.message === "401" ? "token needed" : "stale"; status.className = "stale";
  }
}
setInterval(refresh, Number(document.body.dataset.refreshMs));
refresh();
`;

/**
 * Builds the dashboard app: `/` (self-refreshing page), `/api/stats` (JSON),
 * `/compliance`, `/healthz`, and the page's script and style.
 *
 * Everything but `/healthz` answers 401 without the token (see
 * {@linkcode DashboardOptions.token}), and every answer carries
 * Content-Security-Policy, X-Content-Type-Options, X-Frame-Options and
 * Referrer-Policy; all but the script and style are `Cache-Control: no-store`.
 *
 * @throws {TypeError} if the token is empty or holds characters other than printable ASCII.
 *
 * @example
 * ```ts
 * const token = generateDashboardToken();
 * const app = createDashboardApp({ stats: () => collector.stats(), token });
 * Deno.serve({ hostname: "127.0.0.1", port: 8080 }, app.fetch);
 * console.log(`dashboard http://127.0.0.1:8080/?token=${token}`);
 * ```
 */
export function createDashboardApp(options: DashboardOptions): Hono {
  const refreshMs = options.refreshMs ?? 2000;
  const { token } = options;
  if (token !== null && !/^[\x21-\x7e]+$/.test(token)) {
    throw new TypeError("the dashboard token must be non-empty printable ASCII without spaces");
  }
  const check = token === null ? null : tokenChecker(token);
  const app = new Hono();
  app.use("*", async (c, next) => {
    await next();
    // Deno.serve passes its connection info as the second argument, which Hono exposes as c.env.
    const addr = (c.env as { remoteAddr?: Deno.NetAddr } | undefined)?.remoteAddr;
    options.onAccess?.({
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      remote: addr ? `${addr.hostname}:${addr.port}` : null,
    });
  });
  // Security headers on every answer: pages, errors, 401s, 404s and redirects alike.
  app.use("*", async (c, next) => {
    await next();
    const headers = c.res.headers;
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) headers.set(name, value);
    if (c.res.status === 401 || c.req.path.startsWith("/api/") || !headers.has("Cache-Control")) {
      headers.set("Cache-Control", "no-store");
    }
  });
  app.use("*", async (c, next) => {
    if (check === null || c.req.path === "/healthz") return await next();
    const path = c.req.path;
    if (c.req.method === "GET" && TOKEN_LINK_PATHS.has(path)) {
      const url = new URL(c.req.url);
      const linkToken = url.searchParams.get("token");
      if (linkToken !== null) {
        if (!check(linkToken)) return unauthorized(c, false);
        // Trade the token in the address for a cookie, so it leaves the address bar and history.
        setCookie(c, DASHBOARD_COOKIE, linkToken, {
          httpOnly: true,
          sameSite: "Strict",
          path: "/",
          secure: url.protocol === "https:",
        });
        url.searchParams.delete("token");
        return c.redirect(path + url.search, 303);
      }
    }
    const bearer = bearerToken(c.req.header("Authorization"));
    if (bearer !== null && check(bearer)) return await next();
    const cookie = getCookie(c, DASHBOARD_COOKIE);
    if (cookie !== undefined && check(cookie)) return await next();
    return unauthorized(c, bearer !== null);
  });
  app.get("/", (c) => c.html(renderPage(options.stats(), refreshMs)));
  app.get("/api/stats", (c) => {
    c.header("Cache-Control", "no-store");
    return c.json(options.stats());
  });
  app.get("/compliance", (c) => c.html(renderCompliance(options.stats())));
  app.get("/healthz", (c) => c.text("ok"));
  app.get(
    "/dashboard.js",
    (c) => c.body(JS, 200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": STATIC_CACHE }),
  );
  app.get(
    "/dashboard.css",
    (c) => c.body(CSS, 200, { "Content-Type": "text/css; charset=utf-8", "Cache-Control": STATIC_CACHE }),
  );
  app.notFound((c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));
  app.onError((err, c) => c.json({ error: err.message }, 500));
  return app;
}
