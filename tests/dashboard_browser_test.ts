/**
 * The dashboard in a real headless Chromium, against a real collector fed over
 * TLS. The test is ignored (not passed) where Chromium is not installed.
 * Set TLSLOG_KEEP_SCREENSHOT=<file.png> to keep the page's screenshot.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Sender } from "../client/sender.ts";
import { connectTransport } from "../client/tls_transport.ts";
import { createDashboardApp, generateDashboardToken } from "../dashboard/dashboard_app.ts";
import { ALPN_V2 } from "../shared/protocol.ts";
import { startTestCollector, testCerts } from "./test_support.ts";

const CHROMIUM = "/usr/bin/chromium";

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

const hasChromium = isFile(CHROMIUM);

/** Sends `count` entries to the collector and waits until they are acknowledged (stored). */
async function sendEntries(port: number, first: number, count: number): Promise<void> {
  const { ca } = await testCerts();
  const sender = new Sender({
    connect: () => connectTransport({ host: "localhost", port, caCert: ca, alpnProtocols: [ALPN_V2] }),
  });
  const lineNos = Array.from({ length: count }, (_, i) => first + i);
  await sender.add(lineNos.map((n) => JSON.stringify({ msg: `browser test entry ${n}` })), "test", lineNos);
  const summary = await sender.finish();
  assert.deepStrictEqual([summary.entries, summary.acknowledged], [count, count]);
}

/**
 * Runs headless Chromium on `url` with `extraArgs` and returns its stdout and
 * stderr (where `--enable-logging=stderr` puts the page's console, CSP
 * violations included). Virtual time stands still while a request is
 * pending, so a slow answer from the test server cannot make the page give up early.
 */
async function runChromium(
  url: string,
  extraArgs: string[],
  timeoutMs = 60_000,
): Promise<{ stdout: string; stderr: string }> {
  const profile = await Deno.makeTempDir({ prefix: "tlslog-chromium-" });
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const out = await new Deno.Command(CHROMIUM, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${profile}`,
        ...extraArgs,
        url,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    if (!out.success) {
      throw new Error(
        `chromium exited with ${out.code}${abort.signal.aborted ? ` (killed after ${timeoutMs} ms)` : ""}: ` +
          stderr.slice(-2000),
      );
    }
    return { stdout, stderr };
  } finally {
    clearTimeout(timer);
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

/** The text of the element with `id` in a serialised DOM. */
function textById(html: string, id: string): string | undefined {
  return new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(html)?.[1];
}

Deno.test({
  name: "createDashboardApp() page refreshes its tiles from /api/stats in headless Chromium, with the token only",
  ignore: !hasChromium,
  async fn() {
    await using tc = await startTestCollector();
    const token = generateDashboardToken();
    const answered: string[] = [];
    const app = createDashboardApp({
      stats: () => tc.collector.stats(),
      refreshMs: 200,
      token,
      onAccess: ({ path, status }) => answered.push(`${status} ${path}`),
    });

    await sendEntries(tc.port, 1, 7);
    assert.equal(tc.collector.stats().entries_written, 7);

    // Between the page's HTML and its script's first /api/stats request, five
    // more entries are stored: only a script that fetched and redrew can show 12.
    let pageHtml = "";
    let secondBatch: Promise<void> | null = null;
    let statsRequests = 0;
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/api/stats") {
        statsRequests++;
        await secondBatch;
      }
      const res = await app.fetch(req);
      // The first page itself, not the redirect that trades ?token= for the cookie.
      if (path === "/" && res.status === 200 && secondBatch === null) {
        pageHtml = await res.clone().text();
        secondBatch = sendEntries(tc.port, 8, 5);
      }
      return res;
    });
    const tmp = await Deno.makeTempDir({ prefix: "tlslog-browser-" });
    try {
      const base = `http://127.0.0.1:${server.addr.port}/`;
      const url = `${base}?token=${token}`;
      const { stdout: dom, stderr } = await runChromium(url, [
        "--virtual-time-budget=1500",
        "--enable-logging=stderr",
        "--dump-dom",
      ]);
      await secondBatch;

      // The link answered 303 with the cookie, and the cookie opened the page, its assets and the API.
      assert.equal(answered[0], "303 /");
      assert.ok(answered.includes("200 /"), answered.join(", "));
      assert.ok(answered.includes("200 /dashboard.js"), answered.join(", "));
      assert.ok(answered.includes("200 /dashboard.css"), answered.join(", "));
      assert.ok(answered.includes("200 /api/stats"), answered.join(", "));
      assert.ok(!answered.some((a) => a.startsWith("401 /api/") || a === "401 /"), answered.join(", "));
      // Nothing on the page is blocked by its Content-Security-Policy.
      const violations = stderr.split("\n").filter((line) => /Content Security Policy/i.test(line));
      assert.deepStrictEqual(violations, []);

      assert.equal(textById(pageHtml, "entries_written"), "7", "server-rendered value");
      assert.ok(statsRequests >= 1, "the page's script never asked for /api/stats");
      assert.deepStrictEqual(
        {
          entries_written: textById(dom, "entries_written"),
          entries_received: textById(dom, "entries_received"),
          status: textById(dom, "status"),
        },
        { entries_written: "12", entries_received: "12", status: "live" },
      );
      const renderedAt = Date.parse(textById(pageHtml, "updated_at") ?? "");
      const refreshedAt = Date.parse(textById(dom, "updated_at") ?? "");
      assert.ok(refreshedAt > renderedAt, `updated_at ${refreshedAt} is not after the render time ${renderedAt}`);

      // Without the token (a fresh profile, no cookie) the browser gets the 401 text and no stats.
      const { stdout: refused } = await runChromium(base, ["--virtual-time-budget=500", "--dump-dom"]);
      assert.match(refused, /401 Unauthorized: the tlslog dashboard needs its access token/);
      assert.match(refused, /\/\?token=&lt;token&gt;/);
      assert.equal(textById(refused, "entries_written"), undefined);
      assert.ok(answered.includes("401 /"), answered.join(", "));

      const screenshot = join(tmp, "dashboard.png");
      await runChromium(url, ["--virtual-time-budget=1000", "--window-size=1280,800", `--screenshot=${screenshot}`]);
      const png = await Deno.readFile(screenshot);
      assert.deepStrictEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      assert.ok(png.length > 10_000, `screenshot is only ${png.length} bytes`);
      if (Deno.env.get("TLSLOG_KEEP_SCREENSHOT")) {
        await Deno.copyFile(screenshot, Deno.env.get("TLSLOG_KEEP_SCREENSHOT")!);
      }
    } finally {
      await server.shutdown();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
