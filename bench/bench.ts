/**
 * End-to-end benchmark of tlslog with real processes: `tlslog serve` as one
 * child process, `tlslog send` as others, over TLS on 127.0.0.1, against a
 * baseline client of protocol v1 (one entry per frame, one answer awaited per
 * frame) and against syslog-ng receiving the same lines over TLS from loggen.
 * Also 100 concurrent in-process `Sender`s (zero loss required), and the ack
 * latency of a raw v2 client pacing 10,000 entries/s. Every scenario checks
 * that the stored files hold exactly the entries sent (each `seq` once), and
 * measures the peak RSS of the server and senders from /proc.
 *
 * The server runs durable (`--fsync batch`, `--rotate-bytes 64MiB`) when
 * `serve --help` lists those flags; otherwise without them (the report says
 * which).
 *
 * Then, in a fresh process (store_costs.ts), what the store's tamper evidence
 * and encryption cost without network or TLS: hash chaining alone (target
 * >= 500,000 entries/s), store throughput chained / encrypted / with signed
 * checkpoints / durable against a plain append of the same bytes, and
 * `verifyStore` read-back speed.
 *
 *   deno task bench [--entries 300000] [--v1-entries 20000] [--senders 8] [--runs 3]
 *                   [--clients 100] [--client-entries 1000] [--latency-seconds 5] [--no-syslog-ng] [--keep]
 *                   [--only store|e2e|fuzz]
 *
 * `--only store` runs just the store costs (about a minute; `--entries` and
 * `--runs` apply); `--only e2e` everything but them; `--only fuzz` just the
 * long fuzz campaign (bench/fuzz.ts: 100,000 malformed inputs while 100,000
 * entries are sent; fails when a Done-when condition fails).
 *
 * Progress goes to stderr; the report (machine, peers, table, ratios) to stdout.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { seededRandom } from "../client/healthcare_source.ts";
import { measureTransformInChild } from "./transform.ts";
import { percentile, runAckLatency, runManyClients } from "./in_process.ts";
import { formatStoreCosts, measureStoreCostsInChild } from "./store_costs.ts";
import { collect, killAll, ProcWatch, runToEnd, spawnProcess, statusWithin, type Usage } from "./procs.ts";
import { type Availability, ensureSyslogNg, runSyslogNg } from "./syslog_ng.ts";
import { type Stored, verifyStored } from "./verify.ts";
import { runFuzzBench } from "./fuzz.ts";

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
    clients: { type: "string", default: "100" },
    "client-entries": { type: "string", default: "1000" },
    "latency-seconds": { type: "string", default: "5" },
    "no-syslog-ng": { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
    only: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (flags.help) {
  console.log(
    [
      "Usage: deno task bench [--entries N] [--v1-entries N] [--senders N] [--runs N] [--clients N]",
      "                       [--client-entries N] [--latency-seconds N] [--no-syslog-ng] [--keep]",
      "                       [--only store|e2e|fuzz]",
      "  --entries N          entries sent by the throughput scenarios and by loggen (default 300000)",
      "  --v1-entries N       entries sent by the v1 baseline, one frame each (default 20000)",
      "  --senders N          concurrent send processes of the multi-connection scenario (default 8)",
      "  --runs N             runs of the throughput scenarios; the table shows the median (default 3);",
      "                       the many-clients and ack-latency scenarios run once",
      "  --clients N          concurrent in-process Senders, one connection each (default 100)",
      "  --client-entries N   entries sent by each of those (default 1000)",
      "  --latency-seconds N  length of the ack-latency run at 10,000 entries/s (default 5)",
      "  --no-syslog-ng       skip the syslog-ng side-by-side (otherwise installed with apt-get when missing)",
      "  --keep               keep the temporary directory (input, certificates)",
      "  --only store         only the store costs (bench/store_costs.ts: chain hashing, store throughput",
      "                       against a plain append, verifyStore read-back; in process, no server)",
      "  --only e2e           everything but the store costs",
      "  --only fuzz          only the fuzz campaign (bench/fuzz.ts: 100,000 malformed inputs against serve while",
      "                       100,000 entries are sent; run bench/fuzz.ts directly to change its numbers)",
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

if (flags.only !== undefined && flags.only !== "store" && flags.only !== "e2e" && flags.only !== "fuzz") {
  console.error(`bench: --only must be "store", "e2e" or "fuzz", got "${flags.only}"`);
  Deno.exit(2);
}
const ONLY = flags.only as "store" | "e2e" | "fuzz" | undefined;
const ENTRIES = positiveInt("entries", flags.entries);
const V1_ENTRIES = Math.min(positiveInt("v1-entries", flags["v1-entries"]), ENTRIES);
const SENDERS = Math.min(positiveInt("senders", flags.senders), ENTRIES);
const RUNS = positiveInt("runs", flags.runs);
const CLIENTS = positiveInt("clients", flags.clients);
const CLIENT_ENTRIES = positiveInt("client-entries", flags["client-entries"]);
/** Ack latency: a BATCH of LAT_BATCH entries every LAT_INTERVAL_MS (10,000 entries/s). */
const LAT_BATCH = 100;
const LAT_INTERVAL_MS = 10;
const LAT_BATCHES = Math.round(positiveInt("latency-seconds", flags["latency-seconds"]) * 1000 / LAT_INTERVAL_MS);
const LAT_ENTRIES = LAT_BATCHES * LAT_BATCH;
/** Entries kept in memory for the in-process scenarios: the same lines as the input file's first ones. */
const POOL = Math.max(CLIENTS * CLIENT_ENTRIES, LAT_ENTRIES, V1_ENTRIES);
/** loggen --rate: far above what syslog-ng takes, so loggen's pacing is not the limit. */
const LOGGEN_RATE = 1_000_000;

const progress = (m: string) => console.error(`bench: ${m}`);

/** Starts `deno run -A main.ts ...args`. */
function spawn(args: string[], stdout: "piped" | "null" = "piped"): Deno.ChildProcess {
  return spawnProcess(Deno.execPath(), ["run", "-A", MAIN, ...args], { cwd: ROOT, stdout });
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
  /** Bytes of all lines with their newlines. */
  bytes: number;
  /** The first POOL entries (seq 1..POOL), in memory for the in-process clients. */
  pool: string[];
  /** Bytes of the first n pool lines with newlines. */
  poolBytes: (n: number) => number;
}

async function generateInput(dir: string): Promise<Input> {
  const make = makeEntryFactory();
  const all = join(dir, "entries.jsonl");
  const parts = Array.from({ length: SENDERS }, (_, i) => join(dir, `part-${i}.jsonl`));
  const allWriter = new LineWriter(await Deno.open(all, { write: true, create: true, truncate: true }));
  const partWriters = await Promise.all(
    parts.map(async (p) => new LineWriter(await Deno.open(p, { write: true, create: true, truncate: true }))),
  );
  const pool: string[] = [];
  const poolSizes = new Float64Array(POOL + 1);
  let bytes = 0;
  for (let i = 0; i < Math.max(ENTRIES, POOL); i++) {
    const line = make(i + 1);
    const size = encoder.encode(line).length + 1;
    if (i < ENTRIES) {
      bytes += size;
      await allWriter.add(line);
      await partWriters[Math.floor(i * SENDERS / ENTRIES)]!.add(line);
    }
    if (i < POOL) {
      pool.push(line);
      poolSizes[i + 1] = poolSizes[i]! + size;
    }
  }
  await allWriter.close();
  for (const w of partWriters) await w.close();
  return { all, parts, bytes, pool, poolBytes: (n) => poolSizes[n]! };
}

// ---------------------------------------------------------------------------
// The collector as a child process.

/** What `serve --help` offers, found out at start. */
interface ServeFeatures {
  fsync: boolean;
  rotateBytes: boolean;
}

async function detectServeFeatures(): Promise<ServeFeatures> {
  const help = await runToEnd(Deno.execPath(), ["run", "-A", MAIN, "serve", "--help"], 60_000, { cwd: ROOT });
  if (!help.success) throw new Error(`serve --help failed: ${help.stderr}`);
  return { fsync: /--fsync\b/.test(help.stdout), rotateBytes: /--rotate-bytes\b/.test(help.stdout) };
}

/** Server flags of a scenario and how the table names them. */
interface ServerMode {
  args: string[];
  label: string;
}

/** The durable mode (or the nearest the server offers), or the same with fsync off. */
function serverMode(features: ServeFeatures, fsync: "batch" | "off"): ServerMode {
  const args: string[] = [];
  const parts: string[] = [];
  if (features.fsync) {
    args.push("--fsync", fsync);
    parts.push(`--fsync ${fsync}`);
  } else {
    parts.push("no fsync (serve has no --fsync)");
  }
  if (features.rotateBytes) {
    args.push("--rotate-bytes", "64MiB", "--rotate-entries", "1000000000");
    parts.push("--rotate-bytes 64MiB");
  } else {
    // About 64 MiB of these 330-byte entries.
    args.push("--rotate-entries", "200000");
    parts.push("--rotate-entries 200000 (serve has no --rotate-bytes)");
  }
  return { args, label: parts.join(", ") };
}

interface Server {
  port: number;
  dataDir: string;
  /** SIGTERM, wait for the graceful stop; resolves to the server's usage. */
  stop(): Promise<Usage>;
}

async function startServer(certDir: string, dataDir: string, mode: ServerMode): Promise<Server> {
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
    ...mode.args,
    "--cert",
    join(certDir, "server.crt"),
    "--key",
    join(certDir, "server.key"),
    "--signing-key",
    join(certDir, "checkpoint.key"),
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
// What an fsync costs where the data goes: durable acks can be no faster.

/** File system of `dir` and fdatasync times (ms, sorted) of 200 appends of 33 KB (about one batch) there. */
async function probeFsync(dir: string): Promise<{ fs: string; ms: number[] }> {
  const df = await runToEnd("df", ["-T", dir], 10_000);
  const fields = df.stdout.trim().split("\n")[1]?.trim().split(/\s+/) ?? [];
  const fs = fields.length >= 2 ? `${fields[1]} (${fields[0]})` : "unknown file system";
  const path = join(dir, "fsync-probe.bin");
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(33_000).fill(0x61);
  const times: number[] = [];
  try {
    for (let i = 0; i < 200; i++) {
      let off = 0;
      while (off < chunk.length) off += await file.write(chunk.subarray(off));
      const t = performance.now();
      await file.syncData();
      times.push(performance.now() - t);
    }
  } finally {
    file.close();
    await Deno.remove(path);
  }
  return { fs, ms: times.sort((a, b) => a - b) };
}

// ---------------------------------------------------------------------------
// Scenarios.

/** Ack latency of a paced run, ms. */
interface Latency {
  p50: number;
  p99: number;
  max: number;
}

/** What a scenario's client side measured. */
interface RunResult {
  seconds: number;
  /** Usage of each sending process (none for in-process clients). */
  senders: Usage[];
  /** The bench process itself (VmRSS) while in-process clients ran. */
  inProcess?: Usage;
  latency?: Latency;
  note: string;
}

interface Run extends RunResult {
  server: Usage;
  stored: Stored;
}

interface Scenario {
  name: string;
  /** Server flags / peer setup shown in the table. */
  mode: string;
  entries: number;
  bytes: number;
  /** Runs wanted (the table shows the median). */
  wanted: number;
  /** tlslog v2 and measured at full speed: compared with the baselines. */
  throughput: boolean;
  /** A failed zero-loss check of this scenario fails the bench (not so for a peer). */
  mustBeExact: boolean;
  /** Runs the scenario once in `dir` (fresh, empty). */
  execute: (dir: string) => Promise<Run>;
  runs: Run[];
  /** Set when the scenario could not run. */
  skipped?: string;
}

const mib = (kb: number) => `${(kb / 1024).toFixed(0)} MiB`;
const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");
const cpu = (u: Usage) => `${u.cpuSeconds.toFixed(2)} s`;
const ms = (x: number) => x < 10 ? x.toFixed(2) : x.toFixed(1);

/** The run of median time (the slower middle one for an even count). */
function medianRun(runs: Run[]): Run {
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const rate = (sc: Scenario) => sc.entries / medianRun(sc.runs).seconds;

/** "Machine: nproc ..., Deno ..., target". */
async function machineLine(): Promise<string> {
  const nproc = decoder.decode((await new Deno.Command("nproc", { stdout: "piped" }).output()).stdout).trim();
  const cpuModel = /^model name\s*:\s*(.+)$/m.exec(await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))?.[1];
  return `Machine: nproc ${nproc}${cpuModel ? ` (${cpuModel})` : ""}, Deno ${Deno.version.deno} ` +
    `(V8 ${Deno.version.v8}), ${Deno.build.target}`;
}

/** The store costs (store_costs.ts, in a fresh process) on the bench's input: report lines. */
async function storeCosts(tmp: string, input: Input): Promise<string[]> {
  progress(`store costs: ${fmtInt(ENTRIES)} entries, ${RUNS} run(s) of each measurement, in a fresh process`);
  const dir = join(tmp, "store-costs");
  try {
    return formatStoreCosts(await measureStoreCostsInChild(input.all, dir, RUNS));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** `--only store`: the input, the fsync probe and the store costs, nothing else. */
async function storeCostsOnly(tmp: string, benchStarted: number): Promise<void> {
  const fsyncProbe = await probeFsync(tmp);
  progress(`generating ${fmtInt(Math.max(ENTRIES, POOL))} entries`);
  const input = await generateInput(tmp);
  const section = await storeCosts(tmp, input);
  const out = [
    "## tlslog benchmark: store costs (--only store)",
    "",
    await machineLine(),
    "",
    `Scratch files in ${tmp.replace(/[^/]*$/, "")} on ${fsyncProbe.fs}; fdatasync after a 33 KB append there: ` +
    `p50 ${ms(percentile(fsyncProbe.ms, 0.5))} ms, p99 ${ms(percentile(fsyncProbe.ms, 0.99))} ms (200 probes).`,
    "",
    ...section,
    "",
    `- bench total ${((performance.now() - benchStarted) / 1000).toFixed(1)} s`,
  ];
  console.log(out.join("\n"));
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
    if (ONLY === "store") {
      await storeCostsOnly(tmp, benchStarted);
      return;
    }
    if (ONLY === "fuzz") {
      const { ok, text } = await runFuzzBench({ log: (m) => progress(`fuzz: ${m}`) });
      console.log(["## tlslog benchmark: fuzz campaign (--only fuzz)", "", await machineLine(), "", text].join("\n"));
      console.log(`\n- bench total ${((performance.now() - benchStarted) / 1000).toFixed(1)} s`);
      if (!ok) Deno.exitCode = 1;
      return;
    }
    const certDir = join(tmp, "certs");
    const certs = await new Deno.Command("sh", {
      args: [join(ROOT, "certs.sh"), certDir],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!certs.success) throw new Error(`certs.sh failed: ${decoder.decode(certs.stderr)}`);
    const caPath = join(certDir, "ca.crt");
    const caPem = await Deno.readTextFile(caPath);

    // Also warms Deno's module cache so no scenario pays for the first transpile.
    const features = await detectServeFeatures();
    const durable = serverMode(features, "batch");
    const noSync = serverMode(features, "off");
    progress(`server mode: ${durable.label}`);
    const fsyncProbe = await probeFsync(tmp);

    let syslogNg: Availability;
    if (flags["no-syslog-ng"]) {
      syslogNg = { ok: false, version: "", installed: false, notes: ["--no-syslog-ng given"] };
    } else {
      syslogNg = await ensureSyslogNg(progress);
    }
    for (const n of syslogNg.notes) progress(`syslog-ng: ${n}`);

    progress(`generating ${fmtInt(Math.max(ENTRIES, POOL))} entries`);
    const input = await generateInput(tmp);
    progress(`input ${(input.bytes / 1e6).toFixed(1)} MB, ${(input.bytes / ENTRIES).toFixed(0)} bytes per entry`);

    /** Runs `fn` against a fresh server in `dir`, then stops it and checks what it stored. */
    const withServer = async (
      dir: string,
      mode: ServerMode,
      entries: number,
      fn: (server: Server) => Promise<RunResult>,
    ): Promise<Run> => {
      const dataDir = join(dir, "data");
      const server = await startServer(certDir, dataDir, mode);
      let result: RunResult;
      try {
        result = await fn(server);
      } catch (err) {
        await server.stop().catch(() => undefined);
        throw err;
      }
      const serverUsage = await server.stop();
      const stored = await verifyStored(dataDir, entries);
      return { ...result, server: serverUsage, stored };
    };

    const v2 = (level: number): Scenario => ({
      name: `tlslog send -> serve, 1 connection, batches of 1000, gzip ${level}`,
      mode: durable.label,
      entries: ENTRIES,
      bytes: input.bytes,
      wanted: RUNS,
      throughput: true,
      mustBeExact: true,
      runs: [],
      execute: (dir) =>
        withServer(dir, durable, ENTRIES, async (server) => {
          const r = await runSend(server.port, caPath, input.all, level);
          return {
            seconds: r.wallMs / 1000,
            senders: [r.usage],
            note: `sender's own time ${r.selfSeconds.toFixed(2)} s (${fmtInt(ENTRIES / r.selfSeconds)} entries/s), ` +
              `compressed/raw ${r.compressionRatio.toFixed(3)}`,
          };
        }),
    });
    const main1 = v2(1);
    const v1: Scenario = {
      name: "v1 baseline: 1 entry per frame, answer awaited per frame",
      mode: noSync.label,
      entries: V1_ENTRIES,
      bytes: input.poolBytes(V1_ENTRIES),
      wanted: RUNS,
      throughput: false,
      mustBeExact: true,
      runs: [],
      execute: (dir) =>
        withServer(dir, noSync, V1_ENTRIES, async (server) => ({
          seconds: (await runV1Client(server.port, caPem, input.pool.slice(0, V1_ENTRIES))) / 1000,
          senders: [],
          note: "in-process client (Deno.connectTls without ALPN, gzipSync level 1 per entry); no process start-up " +
            "in its time; " +
            (features.fsync
              ? "server at --fsync off: v1 never had durable acks, and an fsync per entry would measure the disk"
              : "server without fsync"),
        })),
    };
    const concurrent: Scenario = {
      name: `${SENDERS} connections: ${SENDERS} concurrent send processes, 1/${SENDERS} of the entries each, gzip 1`,
      mode: durable.label,
      entries: ENTRIES,
      bytes: input.bytes,
      wanted: RUNS,
      throughput: true,
      mustBeExact: true,
      runs: [],
      execute: (dir) =>
        withServer(dir, durable, ENTRIES, async (server) => {
          const started = performance.now();
          const results = await Promise.all(input.parts.map((p) => runSend(server.port, caPath, p, 1)));
          const wall = performance.now() - started;
          const senderCpu = results.reduce((a, r) => a + r.usage.cpuSeconds, 0);
          return {
            seconds: wall / 1000,
            senders: results.map((r) => r.usage),
            note: `wall time from the first spawn to the last exit; senders' CPU ${senderCpu.toFixed(2)} s in all`,
          };
        }),
    };
    const manyEntries = CLIENTS * CLIENT_ENTRIES;
    const many: Scenario = {
      name: `${CLIENTS} concurrent clients x ${fmtInt(CLIENT_ENTRIES)} entries: in-process Senders, ` +
        `1 connection and stream each, gzip 1`,
      mode: durable.label,
      entries: manyEntries,
      bytes: input.poolBytes(manyEntries),
      wanted: 1,
      throughput: true,
      mustBeExact: true,
      runs: [],
      execute: (dir) =>
        withServer(dir, durable, manyEntries, async (server) => {
          const self = new ProcWatch(Deno.pid, true);
          let r;
          let usage: Usage;
          try {
            r = await runManyClients({ port: server.port, caPem }, input.pool, CLIENTS, CLIENT_ENTRIES);
          } finally {
            usage = self.stop();
          }
          if (r.acknowledged !== manyEntries || r.rejected > 0) {
            throw new Error(
              `${CLIENTS} clients: ${r.acknowledged} of ${manyEntries} acknowledged, ${r.rejected} rejected`,
            );
          }
          return {
            seconds: r.wallMs / 1000,
            senders: [],
            inProcess: usage,
            note: `time to finish = common start to the last client's finish() (connect and TLS handshake included); ` +
              `client finish times p50 ${(percentile(r.clientMs, 0.5) / 1000).toFixed(2)} s, first ` +
              `${(r.clientMs[0]! / 1000).toFixed(2)} s; acknowledged ${
                fmtInt(r.acknowledged)
              }, rejected ${r.rejected}, ` +
              `retries ${r.retries}, resent batches ${r.resentBatches}; bench process CPU ${cpu(usage)}`,
          };
        }),
    };
    const latency: Scenario = {
      name: `ack latency at ${fmtInt(LAT_BATCH * 1000 / LAT_INTERVAL_MS)} entries/s: raw v2 client, ` +
        `1 BATCH of ${LAT_BATCH} every ${LAT_INTERVAL_MS} ms for ${
          (LAT_BATCHES * LAT_INTERVAL_MS / 1000).toFixed(0)
        } s`,
      mode: durable.label,
      entries: LAT_ENTRIES,
      bytes: input.poolBytes(LAT_ENTRIES),
      wanted: 1,
      throughput: false,
      mustBeExact: true,
      runs: [],
      execute: (dir) =>
        withServer(dir, durable, LAT_ENTRIES, async (server) => {
          const self = new ProcWatch(Deno.pid, true);
          let r;
          let usage: Usage;
          try {
            r = await runAckLatency({ port: server.port, caPem }, input.pool, {
              batchEntries: LAT_BATCH,
              intervalMs: LAT_INTERVAL_MS,
              batches: LAT_BATCHES,
              gzipLevel: 1,
            });
          } finally {
            usage = self.stop();
          }
          const l = r.latenciesMs;
          return {
            seconds: r.wallMs / 1000,
            senders: [],
            inProcess: usage,
            latency: { p50: percentile(l, 0.5), p99: percentile(l, 0.99), max: l[l.length - 1]! },
            note: `paced: entries/s is the offered rate; latency = BATCH write started -> its ACK read, ` +
              `${fmtInt(l.length)} batches, mean ${ms(l.reduce((a, x) => a + x, 0) / l.length)} ms; ` +
              `largest send delay behind schedule ${ms(r.maxScheduleLagMs)} ms; gzip (node:zlib level 1) done before ` +
              `the clock started`,
          };
        }),
    };
    const syslog: Scenario = {
      name: "syslog-ng: loggen --use-ssl --dont-parse --read-file, 1 connection -> network(tls) -> file",
      mode: `${syslogNg.version || "syslog-ng"}, flow-control, no acks, no fsync`,
      entries: ENTRIES,
      bytes: input.bytes,
      wanted: RUNS,
      throughput: false,
      mustBeExact: false,
      runs: [],
      skipped: syslogNg.ok ? undefined : syslogNg.notes.join("; "),
      execute: async (dir) => {
        const r = await runSyslogNg({
          dir,
          certPath: join(certDir, "server.crt"),
          keyPath: join(certDir, "server.key"),
          inputFile: input.all,
          entries: ENTRIES,
          bytes: input.bytes,
          rate: LOGGEN_RATE,
        });
        return {
          seconds: r.seconds,
          senders: [r.sender],
          server: r.server,
          stored: r.stored,
          note: `seconds = loggen spawn -> last growth of the destination file${
            r.stalled ? " (it stopped growing before holding every line)" : ""
          }; loggen --rate ${fmtInt(LOGGEN_RATE)} (not the limit); loggen says "${r.loggenSays}"`,
        };
      },
    };
    const scenarios = [main1, v2(6), v1, concurrent, many, latency, syslog];

    let n = 0;
    for (let round = 1; round <= RUNS; round++) {
      for (const sc of scenarios) {
        if (sc.skipped !== undefined || round > sc.wanted) continue;
        const dir = join(tmp, `run-${++n}`);
        await Deno.mkdir(dir);
        let run: Run;
        try {
          run = await sc.execute(dir);
        } catch (err) {
          if (sc.mustBeExact) throw err;
          sc.skipped = `failed: ${(err as Error).message}`;
          progress(`${sc.name}: ${sc.skipped}`);
          continue;
        } finally {
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        }
        sc.runs.push(run);
        progress(
          `run ${round}/${sc.wanted} ${sc.name}: ${fmtInt(sc.entries / run.seconds)} entries/s, stored ${
            fmtInt(run.stored.lines)
          } in ${run.stored.files} file(s)${run.stored.exact ? "" : " (MISMATCH)"}`,
        );
      }
    }

    // -------------------------------------------------------------------------
    // Report.
    const out: string[] = [];
    out.push("## tlslog benchmark");
    out.push("");
    out.push(await machineLine());
    out.push("");
    out.push(
      `Input: ${fmtInt(ENTRIES)} healthcare-like JSON entries, ${(input.bytes / ENTRIES).toFixed(0)} bytes each ` +
        `with newline (${(input.bytes / 1e6).toFixed(1)} MB); the in-process scenarios send the first ones of the ` +
        "same lines. tlslog's server and senders are separate `deno run main.ts` processes on 127.0.0.1 over TLS. " +
        `Each scenario ran the number of times in the runs column (--runs ${RUNS}; the many-clients and ` +
        "ack-latency scenarios once), each time against a fresh server or syslog-ng; the table shows the run of " +
        "median time, the peak RSS of all runs, and whether every run stored exactly the entries sent (each seq " +
        "once). Seconds are the sending side's wall time including process start-up; MB = 10^6 bytes of raw JSON " +
        "lines. All rows were measured in this run on this machine.",
    );
    out.push("");
    out.push("Server modes and peers:");
    out.push(
      `- tlslog serve: --fsync ${
        features.fsync ? "listed by serve --help: used" : "NOT listed by serve --help: not passed"
      }` +
        `; --rotate-bytes ${
          features.rotateBytes ? "listed: used (64MiB)" : "NOT listed: --rotate-entries 200000 (about 64 MiB) instead"
        }. Durable rows: ${durable.label}.`,
    );
    out.push(
      `- Data directories in ${tmp.replace(/[^/]*$/, "")} on ${fsyncProbe.fs}; fdatasync after a 33 KB append ` +
        `there: p50 ${ms(percentile(fsyncProbe.ms, 0.5))} ms, p99 ${ms(percentile(fsyncProbe.ms, 0.99))} ms ` +
        `(200 probes before the scenarios).`,
    );
    out.push(`- v1 baseline: in-process client, server ${noSync.label}.`);
    if (syslogNg.ok) {
      out.push(
        `- syslog-ng: ${
          syslogNg.installed ? "installed by this run (apt-get install syslog-ng-core)" : "already installed"
        }` +
          `, ${syslogNg.version}; loggen from the same package. ${syslogNg.notes.join("; ")}`.trimEnd(),
      );
      if (syslog.skipped) out.push(`- syslog-ng row skipped: ${syslog.skipped}`);
    } else {
      out.push(`- syslog-ng: SKIPPED: ${syslog.skipped}`);
    }
    out.push("");
    out.push(
      "| scenario | server mode | runs | entries | seconds | entries/s | MB/s | ack latency p50 / p99 / max | " +
        "peak RSS server | peak RSS sender | stored = sent |",
    );
    out.push("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|");
    for (const sc of scenarios) {
      if (sc.runs.length === 0) {
        out.push(`| ${sc.name} | ${sc.mode} | 0 | - | - | - | - | - | - | - | skipped: ${sc.skipped ?? "?"} |`);
        continue;
      }
      const m = medianRun(sc.runs);
      const serverPeak = Math.max(...sc.runs.map((r) => r.server.rssKb));
      let sender = "n/a (in bench process)";
      if (m.inProcess) sender = `bench process ${mib(Math.max(...sc.runs.map((r) => r.inProcess?.rssKb ?? 0)))}`;
      else if (sc.runs[0]!.senders.length === 1) sender = mib(Math.max(...sc.runs.map((r) => r.senders[0]!.rssKb)));
      else if (sc.runs[0]!.senders.length > 1) {
        const each = Math.max(...sc.runs.flatMap((r) => r.senders.map((u) => u.rssKb)));
        const sum = Math.max(...sc.runs.map((r) => r.senders.reduce((a, u) => a + u.rssKb, 0)));
        sender = `${mib(each)} each, ${mib(sum)} together`;
      }
      const exact = sc.runs.every((r) => r.stored.exact);
      const check = exact
        ? `yes (${fmtInt(sc.entries)} stored, ${sc.runs.length}/${sc.runs.length} runs)`
        : `NO: stored ${sc.runs.map((r) => fmtInt(r.stored.lines)).join(", ")} of ${fmtInt(sc.entries)}`;
      const lat = m.latency ? `${ms(m.latency.p50)} / ${ms(m.latency.p99)} / ${ms(m.latency.max)} ms` : "-";
      const shownRate = fmtInt(sc.entries / m.seconds) + (sc === latency ? " (paced)" : "");
      out.push(
        `| ${sc.name} | ${sc.mode} | ${sc.runs.length} | ${fmtInt(sc.entries)} | ${m.seconds.toFixed(2)} | ` +
          `${shownRate} | ${(sc.bytes / 1e6 / m.seconds).toFixed(1)} | ${lat} | ${mib(serverPeak)} | ${sender} | ` +
          `${check} |`,
      );
    }
    out.push("");
    const throughputRows = scenarios.filter((sc) => sc.throughput && sc.runs.length > 0);
    if (v1.runs.length > 0) {
      out.push("Ratios of entries/s, tlslog v2 / v1 baseline:");
      for (const sc of throughputRows) out.push(`- ${sc.name}: ${(rate(sc) / rate(v1)).toFixed(1)}x`);
      out.push("");
    }
    if (syslog.runs.length > 0) {
      out.push(
        "Ratios of entries/s, tlslog / syslog-ng (syslog-ng: no acks, no fsync, `flags(flow-control)`; " +
          "tlslog: every batch acknowledged" + (features.fsync ? " after fsync" : "") + "):",
      );
      for (const sc of throughputRows) out.push(`- ${sc.name}: ${(rate(sc) / rate(syslog)).toFixed(2)}x`);
      out.push("");
    } else {
      out.push(`Ratio tlslog / syslog-ng: not measured (${syslog.skipped ?? "no run"}).`);
      out.push("");
    }
    out.push("Notes (median run unless stated):");
    for (const sc of scenarios) {
      if (sc.runs.length === 0) continue;
      const m = medianRun(sc.runs);
      const rates = sc.runs.map((r) => sc.entries / r.seconds);
      const senderCpu = m.senders.length === 1 ? `, sender CPU ${cpu(m.senders[0]!)}` : "";
      out.push(
        `- ${sc.name}: entries/s over ${sc.runs.length} run(s) ${fmtInt(Math.min(...rates))} to ${
          fmtInt(Math.max(...rates))
        }; server CPU ${cpu(m.server)}${senderCpu}; ${m.note}`,
      );
    }
    if (syslog.runs.length > 0) {
      out.push(
        "- syslog-ng setup: a private instance (`syslog-ng -F` with its own --persist-file, --pidfile, --control in a " +
          'temporary directory; no system or internal sources), `network(transport("tls") flags(no-parse) ' +
          'tls(peer-verify(optional-untrusted)))` -> `file(template("${MSG}\\n"))`; loggen does not verify the ' +
          "server's certificate; syslog-ng has no acks and no fsync here, so its numbers are an upper bound for " +
          "plain TLS line shipping, not a like-for-like durable pipeline.",
      );
    }
    const transform = await measureTransformInChild();
    const found = Object.entries(transform.redactions).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${fmtInt(n)}`);
    out.push(
      "",
      "De-identification (client transform, built-in healthcare policy, one core, a fresh process):",
      `- ${fmtInt(transform.entries)} simulated consultation logs in ${transform.seconds.toFixed(2)} s: ` +
        `**${fmtInt(transform.entriesPerSecond)} entries/s** (target >= 300,000); redactions ${found.join(", ")}`,
      "",
    );
    if (ONLY !== "e2e") out.push(...await storeCosts(tmp, input), "");
    out.push(`- bench total ${((performance.now() - benchStarted) / 1000).toFixed(1)} s`);
    console.log(out.join("\n"));

    if (scenarios.some((sc) => sc.mustBeExact && sc.runs.some((r) => !r.stored.exact))) {
      console.error("bench: FAILED: a run did not store exactly the entries sent");
      Deno.exitCode = 1;
    }
    if (syslog.runs.some((r) => !r.stored.exact)) progress("warning: syslog-ng did not store exactly the lines sent");
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    killAll();
    if (flags.keep) progress(`kept ${tmp}`);
    else await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

await main();
