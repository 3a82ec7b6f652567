/**
 * Helpers for tests over real sockets, files and processes: a test CA made by
 * certs.sh, collectors on 127.0.0.1 port 0, `tlslog` child processes.
 *
 * @module
 */
import { join } from "node:path";
import { type Collector, type CollectorOptions, startCollector } from "../server/collector.ts";
import { listDataFiles, readStoreText } from "../server/store_files.ts";

/** Repository root. */
export const ROOT: string = new URL("..", import.meta.url).pathname;

/** Paths and PEM texts of a CA, server and client certificate made by certs.sh. */
export interface TestCerts {
  dir: string;
  caPath: string;
  ca: string;
  cert: string;
  key: string;
  clientCert: string;
  clientKey: string;
}

let certs: Promise<TestCerts> | null = null;

/** Runs certs.sh once per test process into a temporary directory. */
export function testCerts(): Promise<TestCerts> {
  certs ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "tlslog-certs-" });
    // The test CA's private key must not outlive the test run.
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // already gone
      }
    });
    const out = await new Deno.Command("sh", { args: [join(ROOT, "certs.sh"), dir], stdout: "piped", stderr: "piped" })
      .output();
    if (!out.success) throw new Error(`certs.sh failed: ${new TextDecoder().decode(out.stderr)}`);
    const read = (name: string) => Deno.readTextFileSync(join(dir, name));
    return {
      dir,
      caPath: join(dir, "ca.crt"),
      ca: read("ca.crt"),
      cert: read("server.crt"),
      key: read("server.key"),
      clientCert: read("client.crt"),
      clientKey: read("client.key"),
    };
  })();
  return certs;
}

/** A collector on 127.0.0.1 with a fresh data directory. */
export interface TestCollector {
  collector: Collector;
  dataDir: string;
  port: number;
  /** Closes the collector and removes the data directory. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a collector on a free port with the test certificates. */
export async function startTestCollector(overrides: Partial<CollectorOptions> = {}): Promise<TestCollector> {
  const c = await testCerts();
  const dataDir = overrides.dataDir ?? await Deno.makeTempDir({ prefix: "tlslog-data-" });
  const collector = await startCollector({
    host: "127.0.0.1",
    port: 0,
    cert: c.cert,
    key: c.key,
    dataDir,
    rotateEntries: 10,
    maxFrameBytes: 1 << 20,
    maxBatchBytes: 16 << 20,
    maxEntryBytes: 1 << 20,
    log: () => {},
    ...overrides,
  });
  return {
    collector,
    dataDir,
    port: collector.port,
    async [Symbol.asyncDispose]() {
      await collector.close();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    },
  };
}

/** Every stored entry of `dataDir`, parsed, in write order. */
export async function readStored(dataDir: string): Promise<Record<string, unknown>[]> {
  const entries: Record<string, unknown>[] = [];
  for (const name of await listDataFiles(dataDir)) {
    const text = await readStoreText(dataDir, name);
    for (const line of text.split("\n")) if (line) entries.push(JSON.parse(line));
  }
  return entries;
}

/** Output of a finished `tlslog` child process. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno run -A main.ts ...args` to completion. */
export async function runTlslog(
  args: string[],
  options: { stdin?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<RunResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), ...args],
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
    cwd: options.cwd,
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** A `tlslog serve` child process. */
export interface ServeProcess {
  child: Deno.ChildProcess;
  port: number;
  /** Dashboard URL, when it was turned on. */
  dashboardUrl: string | null;
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
  /** stderr collected so far. */
  stderr(): string;
  /** stdout collected so far. */
  stdout(): string;
}

/**
 * Starts `tlslog serve` as a child process and waits for its start-up line.
 * The port defaults to 0 (a free one) and the dashboard to off.
 */
export async function spawnServe(args: string[], timeoutMs = 20_000): Promise<ServeProcess> {
  const c = await testCerts();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "main.ts"),
      "serve",
      "--host",
      "127.0.0.1",
      "--cert",
      join(c.dir, "server.crt"),
      "--key",
      join(c.dir, "server.key"),
      ...(args.includes("--port") ? [] : ["--port", "0"]),
      ...(args.includes("--dashboard-port") ? [] : ["--dashboard-port", "0"]),
      ...(args.includes("--signing-key") ? [] : ["--signing-key", join(c.dir, "checkpoint.key")]),
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // The start-up line goes to stdout, or to stderr under --print.
  let stdoutText = "";
  let stderrText = "";
  let wake: () => void = () => {};
  const collect = (stream: ReadableStream<Uint8Array>, add: (t: string) => void) =>
    stream.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({
        write(t) {
          add(t);
          wake();
        },
      }),
    );
  const stdoutDone = collect(child.stdout, (t) => stdoutText += t);
  const stderrDone = collect(child.stderr, (t) => stderrText += t);
  let exited = false;
  child.status.then(() => {
    exited = true;
    wake();
  });
  const started = performance.now();
  const startLine = /listening on tls:\/\/[^:]+:(\d+)[^\n]*\n/;
  let match: RegExpExecArray | null;
  while (!(match = startLine.exec(stdoutText + stderrText))) {
    const left = timeoutMs - (performance.now() - started);
    if (left <= 0) {
      child.kill("SIGKILL");
      await Promise.all([child.status, stdoutDone, stderrDone]);
      throw new Error(`serve did not start in ${timeoutMs} ms: ${stderrText}`);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, Math.min(left, 200));
    });
    clearTimeout(timer);
    if (exited && !startLine.test(stdoutText + stderrText)) {
      await Promise.all([stdoutDone, stderrDone]);
      throw new Error(`serve exited before listening: ${stderrText}`);
    }
  }
  const port = Number(match[1]);
  const dashboard = /dashboard (http:\/\/\S+\/)/.exec(match[0])?.[1] ?? null;
  return {
    child,
    port,
    dashboardUrl: dashboard,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
      const status = await child.status;
      await Promise.all([stdoutDone, stderrDone]);
      return status;
    },
    stderr: () => stderrText,
    stdout: () => stdoutText,
  };
}
