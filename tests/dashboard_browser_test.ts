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
import { createDashboardApp } from "../dashboard/dashboard_app.ts";
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
 * Runs headless Chromium on `url` with `extraArgs` and returns its stdout.
 * Virtual time stands still while a request is pending, so a slow answer from
 * the test server cannot make the page give up early.
 */
async function runChromium(url: string, extraArgs: string[], timeoutMs = 60_000): Promise<string> {
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
    if (!out.success) {
      throw new Error(
        `chromium exited with ${out.code}${abort.signal.aborted ? ` (killed after ${timeoutMs} ms)` : ""}: ` +
          new TextDecoder().decode(out.stderr).slice(-2000),
      );
    }
    return stdout;
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
  name: "createDashboardApp() page refreshes its tiles from /api/stats in headless Chromium",
  ignore: !hasChromium,
  async fn() {
    await using tc = await startTestCollector();
    const app = createDashboardApp({ stats: () => tc.collector.stats(), refreshMs: 200 });

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
      if (path === "/" && secondBatch === null) {
        pageHtml = await res.clone().text();
        secondBatch = sendEntries(tc.port, 8, 5);
      }
      return res;
    });
    const tmp = await Deno.makeTempDir({ prefix: "tlslog-browser-" });
    try {
      const url = `http://127.0.0.1:${server.addr.port}/`;
      const dom = await runChromium(url, ["--virtual-time-budget=1500", "--dump-dom"]);
      await secondBatch;

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
