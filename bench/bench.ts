/**
 * End-to-end throughput benchmark of tlslog with real processes:
 * `tlslog serve` as one child process, `tlslog send` as others, over TLS on
 * 127.0.0.1, against a baseline client of protocol v1 (one entry per frame,
 * one answer awaited per frame). Every scenario checks that the data files
 * hold exactly the entries sent (each `seq` once), and measures the peak RSS
 * of the server and senders from /proc.
 *
 *   deno task bench [--entries 300000] [--v1-entries 20000] [--senders 8] [--runs 3] [--keep]
 *
 * Progress goes to stderr; the report (machine, table, ratios) to stdout.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { seededRandom } from "../client/healthcare_source.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = join(ROOT, "main.ts");
const CHILD_TIMEOUT_MS = 120_000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// Flags

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    entries: { type: "string", default: "300000" },
    "v1-entries": { type: "string", default: "20000" },
    senders: { type: "string", default: "8" },
    runs: { type: "string", default: "3" },
    keep: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (flags.help) {
  console.log(
    [
      "Usage: deno task bench [--entries N] [--v1-entries N] [--senders N] [--runs N] [--keep]",
      "  --entries N     entries sent by the v2 scenarios (default 300000)",
      "  --v1-entries N  entries sent by the v1 baseline, one frame each (default 20000)",
      "  --senders N     concurrent send processes of the last scenario (default 8)",
      "  --runs N        runs of every scenario; the table shows the median (default 3)",
      "  --keep          keep the temporary directory (input, certificates)",
    ].join("\n"),
  );
  Deno.exit(0);
}

function positiveInt(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) {
    console.error(`bench: --${name} must be a positive integer, got "${text}"`);
    Deno.exit(2);
  }
  return n;
}

const ENTRIES = positiveInt("entries", flags.entries);
const V1_ENTRIES = Math.min(positiveInt("v1-entries", flags["v1-entries"]), ENTRIES);
const SENDERS = Math.min(positiveInt("senders", flags.senders), ENTRIES);
const RUNS = positiveInt("runs", flags.runs);

const progress = (m: string) => console.error(`bench: ${m}`);

// ---------------------------------------------------------------------------
// Child processes: every one started is tracked so that it is always killed.

const live = new Set<Deno.ChildProcess>();

function spawn(args: string[], stdout: "piped" | "null" = "piped"): Deno.ChildProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout,
    stderr: "piped",
  }).spawn();
  live.add(child);
  child.status.finally(() => live.delete(child));
  return child;
}

function killAll(): void {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** Collects a stream as text in the background. */
function collect(stream: ReadableStream<Uint8Array>): { text: () => string; done: Promise<void> } {
  let text = "";
  const done = stream.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (t) => void (text += t) }),
  ).catch(() => {});
  return { text: () => text, done };
}

/** Peak memory and CPU time of a process. */
interface Usage {
  /** Peak resident set, KiB. */
  rssKb: number;
  /** User + system CPU seconds (as of the last poll, at most 50 ms before exit). */
  cpuSeconds: number;
}

const CLK_TCK = Number(
  decoder.decode((await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output()).stdout).trim(),
) || 100;

/**
 * Watches a process: polls /proc/<pid>/status every 50 ms and keeps the
 * largest VmHWM / VmRSS seen (VmHWM is gone once the process has exited, so
 * the last poll before exit is what counts), and /proc/<pid>/stat for CPU time.
 */
class ProcWatch {
  #kb = 0;
  #ticks = 0;
  readonly #timer: ReturnType<typeof setInterval>;
  constructor(readonly pid: number) {
    this.#poll();
    this.#timer = setInterval(() => this.#poll(), 50);
  }
  #poll(): void {
    try {
      const status = Deno.readTextFileSync(`/proc/${this.pid}/status`);
      for (const m of status.matchAll(/^(?:VmHWM|VmRSS):\s+(\d+) kB$/gm)) this.#kb = Math.max(this.#kb, Number(m[1]));
      const stat = Deno.readTextFileSync(`/proc/${this.pid}/stat`);
      // Fields after "(comm)": state is field 3, utime 14, stime 15.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      this.#ticks = Math.max(this.#ticks, Number(fields[11]) + Number(fields[12]));
    } catch {
      // gone
    }
  }
  /** Stops polling; returns what was seen. */
  stop(): Usage {
    clearInterval(this.#timer);
    return { rssKb: this.#kb, cpuSeconds: this.#ticks / CLK_TCK };
  }
}

/** Resolves to the exit status; kills the child when it runs longer than `ms`. */
async function statusWithin(child: Deno.ChildProcess, ms: number, what: string): Promise<Deno.CommandStatus> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, ms);
  try {
    const status = await child.status;
    if (timedOut) throw new Error(`${what} did not finish within ${ms / 1000} s and was killed`);
    return status;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Input: healthcare-like JSON lines of about 330 bytes, every `seq` unique.

const EVENTS = [
  "consultation_started",
  "vitals_recorded",
  "medication_administered",
  "lab_result_viewed",
  "prescription_signed",
  "imaging_ordered",
  "note_amended",
  "consultation_closed",
];
const DEPARTMENTS = ["cardiology", "oncology", "pediatrics", "radiology", "emergency", "neurology", "orthopedics"];
const DETAILS = [
  "Blood pressure 128/82 mmHg, heart rate 74 bpm, SpO2 98% on room air; patient reports mild fatigue since Tuesday.",
  "Amoxicillin 500 mg administered orally; no adverse reaction observed during the 30 minute observation window.",
  "HbA1c 6.9% reviewed with patient; dietary plan adjusted and follow-up scheduled in twelve weeks at the clinic.",
  "Chest X-ray ordered for persistent cough over three weeks; prior imaging from 2023 attached for comparison.",
];
const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";
const TARGET_BYTES = 330;

function makeEntryFactory(): (seq: number) => string {
  const random = seededRandom(0x7115_1095);
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!;
  const token = (n: number) => {
    let s = "";
    for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(random() * 36)];
    return s;
  };
  const start = Date.UTC(2025, 0, 6, 8, 0, 0);
  return (seq) => {
    const head = {
      seq,
      timestamp: new Date(start + seq * 37).toISOString(),
      event: pick(EVENTS),
      department: pick(DEPARTMENTS),
      patient_id: `pt_k1a2b3c_${token(12)}`,
      clinician_id: `cl_${token(8)}`,
      session_id: `ss_${token(16)}`,
      details: "",
    };
    const base = JSON.stringify(head).length;
    head.details = pick(DETAILS).slice(0, Math.max(8, TARGET_BYTES - base));
    return JSON.stringify(head);
  };
}

/** Writes `lines` to `file`, buffered. */
class LineWriter {
  #parts: string[] = [];
  #size = 0;
  constructor(readonly file: Deno.FsFile) {}
  async add(line: string): Promise<void> {
    this.#parts.push(line);
    this.#size += line.length + 1;
    if (this.#size >= 1 << 20) await this.flush();
  }
  async flush(): Promise<void> {
    if (this.#parts.length === 0) return;
    const bytes = encoder.encode(this.#parts.join("\n") + "\n");
    this.#parts = [];
    this.#size = 0;
    let off = 0;
    while (off < bytes.length) off += await this.file.write(bytes.subarray(off));
  }
  async close(): Promise<void> {
    await this.flush();
    this.file.close();
  }
}

interface Input {
  /** All entries, one file. */
  all: string;
  /** The same entries cut into `SENDERS` contiguous parts. */
  parts: string[];
  /** The first V1_ENTRIES entries, for the in-process v1 client. */
  v1Lines: string[];
  /** Bytes of all lines with their newlines. */
  bytes: number;
  /** Bytes of the v1 lines with newlines (same measure). */
  v1Bytes: number;
}

async function generateInput(dir: string): Promise<Input> {
  const make = makeEntryFactory();
  const all = join(dir, "entries.jsonl");
  const parts = Array.from({ length: SENDERS }, (_, i) => join(dir, `part-${i}.jsonl`));
  const allWriter = new LineWriter(await Deno.open(all, { write: true, create: true, truncate: true }));
  const partWriters = await Promise.all(
    parts.map(async (p) => new LineWriter(await Deno.open(p, { write: true, create: true, truncate: true }))),
  );
  const v1Lines: string[] = [];
  let bytes = 0;
  let v1Bytes = 0;
  for (let i = 0; i < ENTRIES; i++) {
    const line = make(i + 1);
    const size = encoder.encode(line).length + 1;
    bytes += size;
    await allWriter.add(line);
    await partWriters[Math.floor(i * SENDERS / ENTRIES)]!.add(line);
    if (i < V1_ENTRIES) {
      v1Lines.push(line);
      v1Bytes += size;
    }
  }
  await allWriter.close();
  for (const w of partWriters) await w.close();
  return { all, parts, v1Lines, bytes, v1Bytes };
}

// ---------------------------------------------------------------------------
// The collector as a child process.

interface Server {
  port: number;
  dataDir: string;
  /** SIGTERM, wait for the graceful stop; resolves to the server's usage. */
  stop(): Promise<Usage>;
}

async function startServer(certDir: string, dataDir: string): Promise<Server> {
  const child = spawn([
    "serve",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--dashboard-port",
    "0",
    "--data-dir",
    dataDir,
    "--rotate-entries",
    "100000",
    "--cert",
    join(certDir, "server.crt"),
    "--key",
    join(certDir, "server.key"),
  ]);
  const watch = new ProcWatch(child.pid);
  const stderr = collect(child.stderr);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stdout = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`serve did not start in 30 s: ${stderr.text()}`)), 30_000);
  });
  let port: number;
  try {
    let m: RegExpExecArray | null;
    while (!(m = /listening on tls:\/\/127\.0\.0\.1:(\d+)/.exec(stdout))) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error(`serve exited before listening: ${stderr.text()}`);
      stdout += value;
    }
    port = Number(m[1]);
  } catch (err) {
    child.kill("SIGKILL");
    await child.status;
    watch.stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  // Keep draining stdout so the server never blocks on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  return {
    port,
    dataDir,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const status = await statusWithin(child, 30_000, "serve (after SIGTERM)");
      const usage = watch.stop();
      await Promise.all([drained, stderr.done]);
      if (!status.success) throw new Error(`serve exited with ${status.code}: ${stderr.text()}`);
      return usage;
    },
  };
}

// ---------------------------------------------------------------------------
// Senders.

interface SendResult {
  /** Wall time from spawn to exit, ms. */
  wallMs: number;
  usage: Usage;
  /** `seconds` of the sender's own summary (excludes start-up). */
  selfSeconds: number;
  compressionRatio: number;
}

async function runSend(port: number, caPath: string, file: string, gzipLevel: number): Promise<SendResult> {
  const started = performance.now();
  const child = spawn([
    "send",
    "--host",
    "localhost",
    "--port",
    String(port),
    "--ca",
    caPath,
    "--batch-size",
    "1000",
    "--max-in-flight",
    "16",
    "--gzip-level",
    String(gzipLevel),
    file,
  ]);
  const watch = new ProcWatch(child.pid);
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  let status: Deno.CommandStatus;
  let usage: Usage;
  try {
    status = await statusWithin(child, CHILD_TIMEOUT_MS, "send");
  } finally {
    usage = watch.stop();
  }
  const wallMs = performance.now() - started;
  await Promise.all([stdout.done, stderr.done]);
  if (!status.success) throw new Error(`send exited with ${status.code}:\n${stdout.text()}\n${stderr.text()}`);
  const field = (name: string) =>
    Number(new RegExp(`^\\s+${name}\\s+([\\d,.]+)$`, "m").exec(stdout.text())?.[1]?.replaceAll(",", ""));
  return { wallMs, usage, selfSeconds: field("seconds"), compressionRatio: field("compression ratio") };
}

/** Reads whole `[u32 BE length][payload]` frames from a connection. */
class FrameReader {
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  constructor(readonly conn: Deno.Conn) {}
  async next(): Promise<Uint8Array> {
    while (true) {
      const have = this.#end - this.#start;
      if (have >= 4) {
        const len = new DataView(this.#buf.buffer, this.#start, 4).getUint32(0);
        if (have >= 4 + len) {
          const payload = this.#buf.slice(this.#start + 4, this.#start + 4 + len);
          this.#start += 4 + len;
          return payload;
        }
        if (4 + len > this.#buf.length) throw new Error(`answer frame of ${len} bytes is too large`);
      }
      if (this.#end === this.#buf.length || this.#start === this.#end) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const n = await this.conn.read(this.#buf.subarray(this.#end));
      if (n === null) throw new Error("server closed the connection");
      this.#end += n;
    }
  }
}

/**
 * Baseline protocol v1 client, in this process: TLS without ALPN, one gzip'd
 * JSON entry per frame, and the `{"status":"ok"}` answer awaited before the
 * next frame. Resolves to the wall time in ms (connect included).
 */
async function runV1Client(port: number, caPem: string, lines: string[]): Promise<number> {
  const started = performance.now();
  const conn = await Deno.connectTls({ hostname: "localhost", port, caCerts: [caPem] });
  try {
    const hs = await conn.handshake();
    if (hs.alpnProtocol !== null) throw new Error(`v1 client negotiated ALPN ${hs.alpnProtocol}`);
    const reader = new FrameReader(conn);
    for (const line of lines) {
      const body = gzipSync(line, { level: 1 });
      const frame = new Uint8Array(4 + body.length);
      new DataView(frame.buffer).setUint32(0, body.length);
      frame.set(body, 4);
      let off = 0;
      while (off < frame.length) off += await conn.write(frame.subarray(off));
      const answer = JSON.parse(decoder.decode(await reader.next()));
      if (answer.status !== "ok") throw new Error(`v1 server answered ${JSON.stringify(answer)}`);
    }
  } finally {
    conn.close();
  }
  return performance.now() - started;
}

// ---------------------------------------------------------------------------
// Verification: the data files hold each sent `seq` exactly once.

interface Stored {
  lines: number;
  files: number;
  /** Every seq in 1..expected present exactly once, nothing else. */
  exact: boolean;
}

async function verifyStored(dataDir: string, expected: number): Promise<Stored> {
  const seen = new Uint8Array(expected + 1);
  let lines = 0;
  let files = 0;
  let exact = true;
  for await (const e of Deno.readDir(dataDir)) {
    if (!e.isFile || !/^tlslog-\d+\.jsonl$/.test(e.name)) continue;
    files++;
    const text = await Deno.readTextFile(join(dataDir, e.name));
    for (const line of text.split("\n")) {
      if (line === "") continue;
      lines++;
      const seq = (JSON.parse(line) as { seq?: unknown }).seq;
      if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 1 || seq > expected || seen[seq]) exact = false;
      else seen[seq] = 1;
    }
  }
  return { lines, files, exact: exact && lines === expected };
}

// ---------------------------------------------------------------------------
// Scenarios.

interface RunResult {
  seconds: number;
  /** Usage of each send process (none for the in-process v1 client). */
  senders: Usage[];
  note: string;
}

interface Run extends RunResult {
  server: Usage;
  stored: Stored;
}

interface Scenario {
  name: string;
  entries: number;
  bytes: number;
  run: (server: Server) => Promise<RunResult>;
  runs: Run[];
}

const mib = (kb: number) => `${(kb / 1024).toFixed(0)} MiB`;
const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");
const cpu = (u: Usage) => `${u.cpuSeconds.toFixed(2)} s`;

/** The run of median time (the slower middle one for an even count). */
function medianRun(runs: Run[]): Run {
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const benchStarted = performance.now();
  const tmp = await Deno.makeTempDir({ prefix: "tlslog-bench-" });
  progress(`temporary directory ${tmp}`);
  const onSignal = () => {
    killAll();
    try {
      Deno.removeSync(tmp, { recursive: true });
    } catch {
      // best effort
    }
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const certDir = join(tmp, "certs");
    const certs = await new Deno.Command("sh", {
      args: [join(ROOT, "certs.sh"), certDir],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!certs.success) throw new Error(`certs.sh failed: ${decoder.decode(certs.stderr)}`);
    const caPath = join(certDir, "ca.crt");
    const caPem = await Deno.readTextFile(caPath);

    progress(`generating ${fmtInt(ENTRIES)} entries`);
    const input = await generateInput(tmp);
    progress(`input ${(input.bytes / 1e6).toFixed(1)} MB, ${(input.bytes / ENTRIES).toFixed(0)} bytes per entry`);

    // Warm Deno's module cache so no scenario pays for the first transpile.
    const warm = spawn(["--version"], "null");
    await Promise.all([statusWithin(warm, 60_000, "warm-up"), collect(warm.stderr).done]);

    const v2 = (level: number): Scenario => ({
      name: `tlslog v2 send -> serve, 1 connection, batches of 1000, gzip ${level}`,
      entries: ENTRIES,
      bytes: input.bytes,
      runs: [],
      run: async (server) => {
        const r = await runSend(server.port, caPath, input.all, level);
        return {
          seconds: r.wallMs / 1000,
          senders: [r.usage],
          note: `sender's own time ${r.selfSeconds.toFixed(2)} s (${fmtInt(ENTRIES / r.selfSeconds)} entries/s), ` +
            `compressed/raw ${r.compressionRatio.toFixed(3)}`,
        };
      },
    });
    const v1: Scenario = {
      name: "v1 baseline: 1 entry per frame, answer awaited per frame",
      entries: V1_ENTRIES,
      bytes: input.v1Bytes,
      runs: [],
      run: async (server) => ({
        seconds: (await runV1Client(server.port, caPem, input.v1Lines)) / 1000,
        senders: [],
        note:
          "in-process client (Deno.connectTls without ALPN, gzipSync level 1 per entry); no process start-up in its time",
      }),
    };
    const concurrent: Scenario = {
      name: `${SENDERS} concurrent send processes, 1/${SENDERS} of the entries each, gzip 1`,
      entries: ENTRIES,
      bytes: input.bytes,
      runs: [],
      run: async (server) => {
        const started = performance.now();
        const results = await Promise.all(input.parts.map((p) => runSend(server.port, caPath, p, 1)));
        const ms = performance.now() - started;
        const senderCpu = results.reduce((a, r) => a + r.usage.cpuSeconds, 0);
        return {
          seconds: ms / 1000,
          senders: results.map((r) => r.usage),
          note: `wall time from the first spawn to the last exit; senders' CPU ${senderCpu.toFixed(2)} s in all`,
        };
      },
    };
    const scenarios = [v2(1), v2(6), v1, concurrent];

    let n = 0;
    for (let round = 1; round <= RUNS; round++) {
      for (const sc of scenarios) {
        const dataDir = join(tmp, `data-${++n}`);
        const server = await startServer(certDir, dataDir);
        let result: RunResult;
        try {
          result = await sc.run(server);
        } catch (err) {
          await server.stop().catch(() => undefined);
          throw err;
        }
        const serverUsage = await server.stop();
        const stored = await verifyStored(dataDir, sc.entries);
        await Deno.remove(dataDir, { recursive: true });
        sc.runs.push({ ...result, server: serverUsage, stored });
        progress(
          `run ${round}/${RUNS} ${sc.name}: ${fmtInt(sc.entries / result.seconds)} entries/s, stored ${
            fmtInt(stored.lines)
          } in ${stored.files} file(s)${stored.exact ? "" : " (MISMATCH)"}`,
        );
      }
    }

    // -------------------------------------------------------------------------
    // Report.
    const nproc = decoder.decode((await new Deno.Command("nproc", { stdout: "piped" }).output()).stdout).trim();
    const cpuModel = /^model name\s*:\s*(.+)$/m.exec(await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))?.[1];
    const out: string[] = [];
    out.push("## tlslog benchmark");
    out.push("");
    out.push(
      `Machine: nproc ${nproc}${
        cpuModel ? ` (${cpuModel})` : ""
      }, Deno ${Deno.version.deno} (V8 ${Deno.version.v8}), ` +
        Deno.build.target,
    );
    out.push("");
    out.push(
      `Input: ${fmtInt(ENTRIES)} healthcare-like JSON entries, ${(input.bytes / ENTRIES).toFixed(0)} bytes each ` +
        `with newline (${(input.bytes / 1e6).toFixed(1)} MB). Server and senders are separate \`deno run main.ts\` ` +
        "processes on 127.0.0.1 over TLS, --rotate-entries 100000. Each scenario ran " +
        `${RUNS} time(s) against a fresh server; the table shows the run of median time, the peak RSS of all runs, ` +
        "and whether every run stored exactly the entries sent (each seq once). Seconds are the sending side's wall " +
        "time including process start-up; MB = 10^6 bytes of raw JSON lines.",
    );
    out.push("");
    out.push("| scenario | entries | seconds | entries/s | MB/s | peak RSS server | peak RSS sender | stored = sent |");
    out.push("|---|---:|---:|---:|---:|---:|---:|---|");
    for (const sc of scenarios) {
      const m = medianRun(sc.runs);
      const serverPeak = Math.max(...sc.runs.map((r) => r.server.rssKb));
      let sender = "n/a (in bench process)";
      if (sc.runs[0]!.senders.length === 1) sender = mib(Math.max(...sc.runs.map((r) => r.senders[0]!.rssKb)));
      else if (sc.runs[0]!.senders.length > 1) {
        const each = Math.max(...sc.runs.flatMap((r) => r.senders.map((u) => u.rssKb)));
        const sum = Math.max(...sc.runs.map((r) => r.senders.reduce((a, u) => a + u.rssKb, 0)));
        sender = `${mib(each)} each, ${mib(sum)} together`;
      }
      const exact = sc.runs.every((r) => r.stored.exact);
      const check = exact
        ? `yes (${fmtInt(sc.entries)} stored, ${sc.runs.length}/${sc.runs.length} runs)`
        : `NO: stored ${sc.runs.map((r) => fmtInt(r.stored.lines)).join(", ")} of ${fmtInt(sc.entries)}`;
      out.push(
        `| ${sc.name} | ${fmtInt(sc.entries)} | ${m.seconds.toFixed(2)} | ${fmtInt(sc.entries / m.seconds)} | ${
          (sc.bytes / 1e6 / m.seconds).toFixed(1)
        } | ${mib(serverPeak)} | ${sender} | ${check} |`,
      );
    }
    out.push("");
    const v1Rate = v1.entries / medianRun(v1.runs).seconds;
    out.push("Ratios of entries/s, tlslog v2 / v1 baseline:");
    for (const sc of scenarios) {
      if (sc === v1) continue;
      out.push(`- ${sc.name}: ${(sc.entries / medianRun(sc.runs).seconds / v1Rate).toFixed(1)}x`);
    }
    out.push("");
    out.push("Notes (median run unless stated):");
    for (const sc of scenarios) {
      const m = medianRun(sc.runs);
      const rates = sc.runs.map((r) => sc.entries / r.seconds);
      const senderCpu = m.senders.length === 1 ? `, sender CPU ${cpu(m.senders[0]!)}` : "";
      out.push(
        `- ${sc.name}: entries/s over ${sc.runs.length} run(s) ${fmtInt(Math.min(...rates))} to ${
          fmtInt(Math.max(...rates))
        }; server CPU ${cpu(m.server)}${senderCpu}; ${m.note}`,
      );
    }
    out.push(`- bench total ${((performance.now() - benchStarted) / 1000).toFixed(1)} s`);
    console.log(out.join("\n"));

    if (scenarios.some((sc) => sc.runs.some((r) => !r.stored.exact))) {
      console.error("bench: FAILED: a run did not store exactly the entries sent");
      Deno.exitCode = 1;
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    killAll();
    if (flags.keep) progress(`kept ${tmp}`);
    else await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

await main();
