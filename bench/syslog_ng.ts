/**
 * syslog-ng as a peer for a side-by-side measurement: a private syslog-ng
 * instance (its own config, persist file, pid file and control socket in a
 * temporary directory, in the foreground, no system log sources) receives
 * lines over TLS from `loggen` and writes them to one file. It has no acks and
 * no fsync in this setup; `flags(flow-control)` makes it push back on the
 * sender instead of dropping messages.
 *
 * @module
 */
import { join } from "node:path";
import { collect, ProcWatch, runToEnd, spawnProcess, statusWithin, terminate, type Usage } from "./procs.ts";
import { checkSeqs, type Stored } from "./verify.ts";

/** Whether syslog-ng and loggen can be used, and how they came to be there. */
export interface Availability {
  ok: boolean;
  /** First line of `syslog-ng --version`. */
  version: string;
  /** True when this run installed syslog-ng-core with apt-get. */
  installed: boolean;
  /** Why not, or what happened on the way. */
  notes: string[];
}

async function present(): Promise<string | null> {
  const v = await runToEnd("syslog-ng", ["--version"], 10_000);
  if (!v.success) return null;
  const l = await runToEnd("loggen", ["--help"], 10_000, { stdout: "null" });
  if (!l.success) return null;
  return v.stdout.split("\n")[0]!.trim();
}

/** Pids of running processes named syslog-ng. */
function syslogNgPids(): Set<number> {
  const pids = new Set<number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      // Field 3 (state) "Z" is a zombie: not running.
      if (/^\d+ \(syslog-ng\) [^Z]/.test(stat)) pids.add(Number(e.name));
    } catch {
      // gone
    }
  }
  return pids;
}

/**
 * Finds syslog-ng and loggen; installs `syslog-ng-core` with apt-get when
 * they are missing (as root only). Never throws: a failure is reported in
 * `notes` with `ok` false.
 */
export async function ensureSyslogNg(log: (m: string) => void): Promise<Availability> {
  const notes: string[] = [];
  let version = await present();
  if (version !== null) return { ok: true, version, installed: false, notes };
  if (Deno.uid() !== 0) {
    notes.push("syslog-ng/loggen not found and not root, so apt-get install syslog-ng-core was not tried");
    return { ok: false, version: "", installed: false, notes };
  }
  log("syslog-ng or loggen missing: apt-get install syslog-ng-core");
  const before = syslogNgPids();
  const apt = await runToEnd("apt-get", ["install", "-y", "--no-install-recommends", "syslog-ng-core"], 300_000, {
    env: { DEBIAN_FRONTEND: "noninteractive" },
  });
  // The package may start the system's syslog-ng service (where policy-rc.d allows it): stop what the install started.
  for (const pid of syslogNgPids()) {
    if (before.has(pid)) continue;
    notes.push(`apt-get started a system syslog-ng (pid ${pid}); the bench stopped it with SIGTERM`);
    try {
      Deno.kill(pid, "SIGTERM");
    } catch {
      // gone
    }
  }
  if (!apt.success) {
    const tail = (apt.stderr.trim() || apt.stdout.trim()).split("\n").slice(-3).join(" / ");
    notes.push(`apt-get install syslog-ng-core failed (exit ${apt.code}): ${tail}`);
    return { ok: false, version: "", installed: false, notes };
  }
  version = await present();
  if (version === null) {
    notes.push("apt-get install syslog-ng-core succeeded but syslog-ng or loggen still does not run");
    return { ok: false, version: "", installed: true, notes };
  }
  return { ok: true, version, installed: true, notes };
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Options of {@linkcode runSyslogNg}. */
export interface SyslogNgRun {
  /** Empty directory for the config, state files and the destination file. */
  dir: string;
  certPath: string;
  keyPath: string;
  /** Lines to send (`loggen --read-file`). */
  inputFile: string;
  /** Lines in the input file. */
  entries: number;
  /** Bytes of the input file. */
  bytes: number;
  /** loggen `--rate` (messages per second per connection). */
  rate: number;
}

/** Outcome of {@linkcode runSyslogNg}. */
export interface SyslogNgResult {
  /** From loggen's spawn to the last growth of the destination file, s. */
  seconds: number;
  stored: Stored;
  server: Usage;
  sender: Usage;
  /** loggen's own "average rate" line. */
  loggenSays: string;
  /** True when the destination stopped growing before it held every line. */
  stalled: boolean;
}

const q = (s: string) => JSON.stringify(s);

/**
 * One measurement: start syslog-ng, wait for its port, run loggen, watch the
 * destination file until it holds every byte sent or stops growing for 1 s,
 * stop both, check the lines.
 */
export async function runSyslogNg(o: SyslogNgRun): Promise<SyslogNgResult> {
  const port = freePort();
  const dest = join(o.dir, "received.log");
  const conf = join(o.dir, "syslog-ng.conf");
  await Deno.writeTextFile(
    conf,
    [
      "@version: 3.38",
      "# Private benchmark instance: no system() or internal() sources, TLS in, one file out.",
      "options { stats-freq(0); log-msg-size(65536); };",
      `source s_tls { network(ip("127.0.0.1") port(${port}) transport("tls") flags(no-parse) log-iw-size(10000)`,
      `  tls(key-file(${q(o.keyPath)}) cert-file(${q(o.certPath)}) peer-verify(optional-untrusted))); };`,
      `destination d_file { file(${q(dest)} template("\${MSG}\\n")); };`,
      "log { source(s_tls); destination(d_file); flags(flow-control); };",
      "",
    ].join("\n"),
  );
  const server = spawnProcess("syslog-ng", [
    "-F",
    "-f",
    conf,
    "--persist-file",
    join(o.dir, "syslog-ng.persist"),
    "--pidfile",
    join(o.dir, "syslog-ng.pid"),
    "--control",
    join(o.dir, "syslog-ng.ctl"),
  ]);
  const serverWatch = new ProcWatch(server.pid);
  const serverOut = collect(server.stdout);
  const serverErr = collect(server.stderr);
  let exited = false;
  server.status.then(() => exited = true);
  let sender: Usage = { rssKb: 0, cpuSeconds: 0 };
  let serverUsage: Usage | null = null;
  try {
    // Wait for the listening socket (a bare TCP probe; syslog-ng shrugs off the failed handshake).
    const deadline = performance.now() + 15_000;
    while (true) {
      if (exited) throw new Error(`syslog-ng exited: ${serverErr.text()}${serverOut.text()}`);
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch {
        if (performance.now() > deadline) throw new Error(`syslog-ng did not listen in 15 s: ${serverErr.text()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const started = performance.now();
    const loggen = spawnProcess("loggen", [
      "--use-ssl",
      "--dont-parse",
      "--read-file",
      o.inputFile,
      "--number",
      String(o.entries),
      "--rate",
      String(o.rate),
      "--active-connections",
      "1",
      "--interval",
      "600",
      "127.0.0.1",
      String(port),
    ]);
    const loggenWatch = new ProcWatch(loggen.pid);
    const loggenOut = collect(loggen.stdout);
    const loggenErr = collect(loggen.stderr);
    let loggenExited = false;
    loggen.status.then(() => loggenExited = true);
    let size = 0;
    let lastGrowth = started;
    let stalled = false;
    try {
      while (size < o.bytes) {
        await new Promise((r) => setTimeout(r, 20));
        const now = performance.now();
        const s = await Deno.stat(dest).then((st) => st.size, () => 0);
        if (s > size) {
          size = s;
          lastGrowth = now;
        } else if (now - lastGrowth > 1000 && (loggenExited || now - lastGrowth > 10_000)) {
          stalled = true;
          break;
        }
        if (exited) throw new Error(`syslog-ng exited during the run: ${serverErr.text()}`);
        if (now - started > 180_000) throw new Error("syslog-ng run took over 180 s");
      }
      await statusWithin(loggen, 30_000, "loggen");
    } finally {
      sender = loggenWatch.stop();
      if (!loggenExited) await terminate(loggen, 1000);
      await Promise.all([loggenOut.done, loggenErr.done]);
    }
    const seconds = (lastGrowth - started) / 1000;
    const loggenSays = /average rate = [^\n]*/.exec(loggenErr.text() + loggenOut.text())?.[0] ?? "";
    await terminate(server, 10_000);
    serverUsage = serverWatch.stop();
    const stored = await checkSeqs(await Deno.stat(dest).then(() => [dest], () => []), o.entries);
    return { seconds, stored, server: serverUsage, sender, loggenSays, stalled };
  } finally {
    if (serverUsage === null) {
      serverWatch.stop();
      await terminate(server, 5_000);
    }
    await Promise.all([serverOut.done, serverErr.done]);
  }
}
