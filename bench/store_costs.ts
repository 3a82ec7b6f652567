/**
 * What the store's tamper evidence and encryption cost, measured in one
 * process without network or TLS: the same newline-terminated entries (the
 * bench's input file) cut into groups of {@linkcode GROUP_ENTRIES}, and
 *
 * 1. hash chaining alone: `chainLines` over each group (SHA-256 per entry
 *    plus the chain-file record text), against a target of
 *    {@linkcode CHAIN_TARGET} entries/s; `chainStep` alone as a breakdown;
 * 2. store throughput: groups appended back to back (`await store.append`)
 *    to a `RotatingStore` (chained; + AES-256-GCM at rest; + a signed
 *    checkpoint per group; + one per rotation at --rotate-entries 10 000),
 *    each against a plain baseline that writes the same bytes to one file
 *    with `writeAll`, the floor of any store; with fsync off (the CPU cost)
 *    and with fsync per group (the durable numbers);
 * 3. read-back: `verifyStore` (read, decrypt, check every line against its
 *    chain record, the chain against the signed checkpoint) of the stores the
 *    last chained and encrypted runs wrote (all the entries, one data file
 *    each, one signed checkpoint added untimed), and reading alone
 *    (`readStoreFile` of every data file) as a breakdown.
 *
 * Every measurement runs `runs` times, interleaved in rounds; the report
 * shows the median.
 *
 *   deno run -A bench/store_costs.ts --input entries.jsonl --dir DIR [--runs 3]
 *
 * prints the result as JSON ({@linkcode StoreCostsResult}); `bench.ts` runs it
 * that way ({@linkcode measureStoreCostsInChild}, a fresh heap) and formats
 * it with {@linkcode formatStoreCosts}. Progress goes to stderr.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeAll } from "../shared/bytes.ts";
import { chainLines, type ChainState, chainStep, genesisState } from "../server/entry_chain.ts";
import { RotatingStore, type RotatingStoreOptions } from "../server/rotating_store.ts";
import { keyFromBytes } from "../server/sealed_file.ts";
import { createSigner, newSigningKeyPem, type NoteSigner, parseVerifierKey } from "../server/signed_note.ts";
import { Checkpointer } from "../server/store_checkpoint.ts";
import { listStoreFiles, readStoreFile } from "../server/store_files.ts";
import { verifyStore } from "../server/store_verifier.ts";

/** Entries per append. */
export const GROUP_ENTRIES = 500;
/** Chain hashing target, entries/s. */
export const CHAIN_TARGET = 500_000;
/** Rotation of the checkpoint-per-rotation scenario (one checkpoint every 20 groups). */
const ROTATE_EVERY = 10_000;
const ORIGIN = "tlslog-bench/store-costs";

/** One measurement, every run. */
export interface Measured {
  /** What was measured. */
  name: string;
  /** How (options, fsync). */
  setup: string;
  entries: number;
  /** Bytes of plain JSON lines with newlines. */
  bytes: number;
  /** Wall time of each run. */
  seconds: number[];
  /** Name of the row this one is compared with. */
  baseline?: string;
  note?: string;
}

/** What {@linkcode measureStoreCosts} found. */
export interface StoreCostsResult {
  entries: number;
  bytes: number;
  groupEntries: number;
  runs: number;
  chain: { target: number; lines: Measured; hashOnly: Measured };
  writes: Measured[];
  reads: Measured[];
  /** Wall time of the whole measurement. */
  totalSeconds: number;
}

/** Options of {@linkcode measureStoreCosts}. */
export interface StoreCostsOptions {
  /** Newline-terminated JSON lines. */
  input: Uint8Array;
  /** Empty scratch directory (removed by the caller). */
  dir: string;
  runs: number;
  progress?: (message: string) => void;
}

/** The median of `xs` (the upper middle one for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** `data` cut after every `per`-th newline; the last group may be shorter. */
function cutGroups(data: Uint8Array, per: number): { groups: Uint8Array[]; counts: number[]; entries: number } {
  const groups: Uint8Array[] = [];
  const counts: number[] = [];
  let start = 0;
  let at = 0;
  let n = 0;
  let entries = 0;
  while (at < data.length) {
    const nl = data.indexOf(0x0a, at);
    if (nl === -1) throw new Error("input does not end in a newline");
    at = nl + 1;
    n++;
    entries++;
    if (n === per || at === data.length) {
      groups.push(data.subarray(start, at));
      counts.push(n);
      start = at;
      n = 0;
    }
  }
  return { groups, counts, entries };
}

interface Workload {
  groups: Uint8Array[];
  counts: number[];
}

/** One timed run of a write scenario. */
interface WriteRun {
  seconds: number;
  /** Time spent in Checkpointer.write, and how many. */
  checkpointSeconds: number;
  checkpoints: number;
  /** The store's chain and last file after close (stores only). */
  chain?: ChainState;
  file?: number;
}

/** A write scenario: runs once in `dir` (fresh, empty). */
interface WriteScenario {
  row: Omit<Measured, "seconds" | "entries" | "bytes">;
  run: (dir: string) => Promise<WriteRun>;
  /** Keep the last run's store for the read-back rows. */
  keepAs?: "plain" | "encrypted";
}

async function timePlain(dir: string, w: Workload, sync: boolean): Promise<WriteRun> {
  const file = await Deno.open(join(dir, "plain.jsonl"), { write: true, createNew: true, mode: 0o600 });
  const started = performance.now();
  try {
    for (const g of w.groups) {
      await writeAll(file, g);
      if (sync) await file.syncData();
    }
  } finally {
    file.close();
  }
  return { seconds: (performance.now() - started) / 1000, checkpointSeconds: 0, checkpoints: 0 };
}

/**
 * Appends every group to a fresh store, timed from the first append to the
 * end of close(); with `checkpoint`, signs and writes a checkpoint (synced)
 * after every `every` groups and after the last.
 */
async function timeStore(
  dir: string,
  w: Workload,
  options: Omit<RotatingStoreOptions, "dir">,
  checkpoint?: { signer: NoteSigner; every: number },
): Promise<WriteRun> {
  const store = await RotatingStore.open({ dir, ...options });
  const checkpointer = checkpoint
    ? await Checkpointer.open({ dir, signer: checkpoint.signer, origin: ORIGIN, sync: true })
    : null;
  let checkpointMs = 0;
  const started = performance.now();
  try {
    for (let i = 0; i < w.groups.length; i++) {
      await store.append(w.groups[i]!, w.counts[i]!);
      if (checkpointer && ((i + 1) % checkpoint!.every === 0 || i === w.groups.length - 1)) {
        const t = performance.now();
        await checkpointer.write(store.chain, store.currentIndex, null);
        checkpointMs += performance.now() - t;
      }
    }
  } finally {
    await store.close();
    await checkpointer?.close();
  }
  return {
    seconds: (performance.now() - started) / 1000,
    checkpointSeconds: checkpointMs / 1000,
    checkpoints: checkpointer?.written ?? 0,
    chain: store.chain,
    file: store.currentIndex,
  };
}

/** Runs every measurement; see the module doc. */
export async function measureStoreCosts(options: StoreCostsOptions): Promise<StoreCostsResult> {
  const began = performance.now();
  const progress = options.progress ?? (() => {});
  const { groups, counts, entries } = cutGroups(options.input, GROUP_ENTRIES);
  const w: Workload = { groups, counts };
  const bytes = options.input.length;
  const runs = options.runs;
  const signer = createSigner(newSigningKeyPem(), "bench");
  const key = await keyFromBytes(crypto.getRandomValues(new Uint8Array(32)));
  const every = ROTATE_EVERY / GROUP_ENTRIES;

  // 1. Chain hashing, after a warm-up on the first tenth so the JIT has compiled the loop.
  let sink = 0;
  const chainAll = (): number => {
    let state: ChainState = genesisState();
    const started = performance.now();
    for (const g of groups) {
      const r = chainLines(state, g);
      state = r.state;
      sink += r.records.length;
    }
    const seconds = (performance.now() - started) / 1000;
    if (state.seq !== entries) throw new Error(`chained ${state.seq} entries, expected ${entries}`);
    return seconds;
  };
  const hashAll = (): number => {
    let head = genesisState().head;
    const started = performance.now();
    for (const g of groups) {
      let start = 0;
      while (start < g.length) {
        const end = g.indexOf(0x0a, start);
        head = chainStep(head, g, start, end);
        start = end + 1;
      }
    }
    sink += head[0]!;
    return (performance.now() - started) / 1000;
  };
  {
    let state = genesisState();
    for (const g of groups.slice(0, Math.ceil(groups.length / 10))) state = chainLines(state, g).state;
  }
  const chainRow: Measured = {
    name: "chain hashing: chainLines",
    setup: `groups of ${GROUP_ENTRIES}, SHA-256 per entry + chain-file record text`,
    entries,
    bytes,
    seconds: [],
  };
  const hashRow: Measured = {
    name: "of which SHA-256 alone: chainStep",
    setup: "h_i = SHA-256(h_{i-1} || entry), no record text",
    entries,
    bytes,
    seconds: [],
  };
  for (let r = 0; r < runs; r++) {
    chainRow.seconds.push(chainAll());
    hashRow.seconds.push(hashAll());
  }
  progress(
    `chain hashing: ${Math.round(entries / median(chainRow.seconds)).toLocaleString("en-US")} entries/s ` +
      `(sink ${sink % 10})`,
  );

  // 2. Writes. First flush what earlier steps left dirty (the input file), so that
  // the kernel's writeback of it does not throttle the first runs.
  await new Deno.Command("sync").output().catch(() => undefined);
  const off = { kind: "off" } as const;
  const batch = { kind: "batch" } as const;
  const PLAIN = "plain baseline";
  const PLAIN_SYNC = "plain baseline, durable";
  const scenarios: WriteScenario[] = [
    {
      row: { name: PLAIN, setup: "writeAll of each group to one file, fsync off" },
      run: (dir) => timePlain(dir, w, false),
    },
    {
      row: { name: "store (chained)", setup: "RotatingStore, fsync off", baseline: PLAIN },
      run: (dir) => timeStore(dir, w, { rotateEntries: 1e9, fsync: off }),
      keepAs: "plain",
    },
    {
      row: {
        name: "store + encryption",
        setup: "RotatingStore + encryptKey (AES-256-GCM), fsync off",
        baseline: PLAIN,
      },
      run: (dir) => timeStore(dir, w, { rotateEntries: 1e9, fsync: off, encryptKey: key }),
      keepAs: "encrypted",
    },
    {
      row: {
        name: "store + checkpoint per group",
        setup: "RotatingStore, fsync off; Checkpointer.write (Ed25519, append, fdatasync) after each append",
        baseline: PLAIN,
      },
      run: (dir) => timeStore(dir, w, { rotateEntries: 1e9, fsync: off }, { signer, every: 1 }),
    },
    {
      row: {
        name: "store + checkpoint per rotation",
        setup: `RotatingStore --rotate-entries ${ROTATE_EVERY.toLocaleString("en-US")}, fsync off; ` +
          `a checkpoint (synced) every ${every} groups`,
        baseline: PLAIN,
      },
      run: (dir) => timeStore(dir, w, { rotateEntries: ROTATE_EVERY, fsync: off }, { signer, every }),
    },
    {
      row: { name: PLAIN_SYNC, setup: "writeAll of each group to one file + fdatasync per group" },
      run: (dir) => timePlain(dir, w, true),
    },
    {
      row: {
        name: "store (chained), durable",
        setup: "RotatingStore, fsync batch (data + commit record synced per append)",
        baseline: PLAIN_SYNC,
      },
      run: (dir) => timeStore(dir, w, { rotateEntries: 1e9, fsync: batch }),
    },
  ];
  const writes: Measured[] = scenarios.map((s) => ({ ...s.row, entries, bytes, seconds: [] }));
  const runsOf: WriteRun[][] = scenarios.map(() => []);
  const kept = new Map<"plain" | "encrypted", { dir: string; run: WriteRun }>();
  let n = 0;
  try {
    for (let r = 0; r < runs; r++) {
      for (let i = 0; i < scenarios.length; i++) {
        const sc = scenarios[i]!;
        const dir = join(options.dir, `write-${++n}`);
        await Deno.mkdir(dir);
        let keep = false;
        try {
          const run = await sc.run(dir);
          writes[i]!.seconds.push(run.seconds);
          runsOf[i]!.push(run);
          keep = sc.keepAs !== undefined && r === runs - 1;
          if (keep) kept.set(sc.keepAs!, { dir, run });
          progress(
            `run ${r + 1}/${runs} ${sc.row.name}: ${
              Math.round(entries / run.seconds).toLocaleString("en-US")
            } entries/s`,
          );
        } finally {
          if (!keep) await Deno.remove(dir, { recursive: true });
        }
      }
    }
    scenarios.forEach((sc, i) => {
      const cps = runsOf[i]!.filter((x) => x.checkpoints > 0);
      if (cps.length === 0) return;
      const each = median(cps.map((x) => x.checkpointSeconds * 1000 / x.checkpoints));
      const share = median(cps.map((x) => x.checkpointSeconds / x.seconds * 100));
      writes[i]!.note = `${cps[0]!.checkpoints} checkpoints of ${each.toFixed(2)} ms each (sign + append + ` +
        `fdatasync), ${share.toFixed(0)}% of the time` +
        (sc.row.name.includes("rotation") ? `; ${Math.ceil(entries / ROTATE_EVERY)} files` : "");
    });

    // 3. Read-back of the last run's chained and encrypted stores, with one signed checkpoint added.
    const reads: Measured[] = [];
    for (const kind of ["plain", "encrypted"] as const) {
      const { dir, run } = kept.get(kind)!;
      const keys = kind === "encrypted" ? [key] : [];
      const checkpointer = await Checkpointer.open({ dir, signer, origin: ORIGIN, sync: true });
      try {
        await checkpointer.write(run.chain!, run.file!, null);
      } finally {
        await checkpointer.close();
      }
      const names = (await listStoreFiles(dir)).flatMap((s) => s.data ? [s.data] : []);
      const setup = `${names.length} data file(s)${kind === "encrypted" ? ", AES-256-GCM" : ""} (the last ` +
        `"${kind === "plain" ? "store (chained)" : "store + encryption"}" run), 1 checkpoint; page cache warm`;
      const verify: Measured = { name: `verifyStore, ${kind} store`, setup, entries, bytes, seconds: [] };
      const read: Measured = {
        name: `of which reading alone: readStoreFile, ${kind}`,
        setup: `every data file${kind === "encrypted" ? ", decrypted" : ""}`,
        entries,
        bytes,
        seconds: [],
      };
      const verifier = parseVerifierKey(signer.verifierKey);
      for (let r = 0; r < runs; r++) {
        let started = performance.now();
        const report = await verifyStore(dir, { verifier, keys });
        verify.seconds.push((performance.now() - started) / 1000);
        if (!report.ok || report.entries !== entries || report.checkpoints !== 1) {
          throw new Error(
            `verifyStore of the ${kind} store: ok ${report.ok}, ${report.entries} entries, ` +
              `${report.checkpoints} checkpoints, damage ${JSON.stringify(report.damage.slice(0, 3))}`,
          );
        }
        started = performance.now();
        let got = 0;
        for (const name of names) got += (await readStoreFile(dir, name, keys)).length;
        read.seconds.push((performance.now() - started) / 1000);
        if (got !== bytes) throw new Error(`read ${got} bytes back from the ${kind} store, wrote ${bytes}`);
      }
      verify.note = "report ok: every line against its chain record, the chain against the checkpoint";
      reads.push(verify, read);
      progress(
        `verifyStore ${kind}: ${Math.round(entries / median(verify.seconds)).toLocaleString("en-US")} entries/s`,
      );
    }

    return {
      entries,
      bytes,
      groupEntries: GROUP_ENTRIES,
      runs,
      chain: { target: CHAIN_TARGET, lines: chainRow, hashOnly: hashRow },
      writes,
      reads,
      totalSeconds: (performance.now() - began) / 1000,
    };
  } finally {
    for (const { dir } of kept.values()) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Runs {@linkcode measureStoreCosts} in a fresh Deno process, on the entries in `inputFile`, scratch under `dir`. */
export async function measureStoreCostsInChild(
  inputFile: string,
  dir: string,
  runs: number,
): Promise<StoreCostsResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--input", inputFile, "--dir", dir, "--runs", String(runs)],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`store cost measurement failed with exit code ${out.code}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");
const rateOf = (m: Measured) => m.entries / median(m.seconds);

/** The report section: markdown lines. */
export function formatStoreCosts(r: StoreCostsResult): string[] {
  const out: string[] = [];
  const row = (m: Measured, vs: string) => {
    const s = median(m.seconds);
    const rates = m.seconds.map((x) => m.entries / x);
    const spread = m.seconds.length > 1 ? ` (${fmtInt(Math.min(...rates))} to ${fmtInt(Math.max(...rates))})` : "";
    out.push(
      `| ${m.name} | ${m.setup} | ${m.seconds.length} | ${fmtInt(m.entries)} | ${s.toFixed(3)} | ` +
        `**${fmtInt(m.entries / s)}**${spread} | ${(m.bytes / 1e6 / s).toFixed(1)} | ${vs} |`,
    );
  };
  const head = (last: string) => {
    out.push(`| measurement | setup | runs | entries | seconds | entries/s (min to max) | MB/s | ${last} |`);
    out.push("|---|---|---:|---:|---:|---:|---:|---|");
  };
  const chainRate = rateOf(r.chain.lines);
  out.push(
    `Store costs (in one fresh process, no network or TLS; ${fmtInt(r.entries)} entries of the same input, ` +
      `${(r.bytes / r.entries).toFixed(0)} bytes each with newline, in groups of ${r.groupEntries}; ` +
      `median of ${r.runs} run(s), runs interleaved; MB = 10^6 bytes of plain JSON lines):`,
  );
  out.push("");
  out.push(
    `- Chain hashing: **${fmtInt(chainRate)} entries/s** (${
      (r.chain.lines.bytes / 1e6 / median(r.chain.lines.seconds)).toFixed(1)
    } MB/s, ${(1e9 / chainRate).toFixed(0)} ns/entry incl. the chain-file record; target >= ${
      fmtInt(r.chain.target)
    }: ${chainRate >= r.chain.target ? "met" : "NOT met"})`,
  );
  out.push("");
  head("note");
  row(r.chain.lines, `target >= ${fmtInt(r.chain.target)}: ${chainRate >= r.chain.target ? "met" : "NOT met"}`);
  row(r.chain.hashOnly, "-");
  out.push("");
  head("vs baseline (entries/s)");
  for (const m of r.writes) {
    let vs = "baseline";
    if (m.baseline) {
      const base = r.writes.find((x) => x.name === m.baseline)!;
      const pct = (rateOf(m) / rateOf(base) - 1) * 100;
      vs = `${pct >= 0 ? "+" : ""}${pct.toFixed(0)}% vs ${m.baseline}`;
    }
    row(m, m.note ? `${vs}; ${m.note}` : vs);
  }
  out.push("");
  head("note");
  for (const m of r.reads) row(m, m.note ?? "-");
  out.push("");
  const parts = r.writes.map((m) => {
    if (!m.baseline) return `${m.name} ${fmtInt(rateOf(m) / 1000)}k/s`;
    const pct = (rateOf(m) / rateOf(r.writes.find((x) => x.name === m.baseline)!) - 1) * 100;
    return `${m.name} ${fmtInt(rateOf(m) / 1000)}k/s (${pct >= 0 ? "+" : "-"}${Math.abs(pct).toFixed(0)}% vs ` +
      `${m.baseline})`;
  });
  out.push(
    `Summary: ${parts.join("; ")}. Run-to-run spread is in the min-to-max column; the measurement took ` +
      `${r.totalSeconds.toFixed(1)} s.`,
  );
  return out;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      input: { type: "string" },
      dir: { type: "string" },
      runs: { type: "string", default: "3" },
    },
  });
  const runs = Number(values.runs);
  if (!values.input || !values.dir || !Number.isSafeInteger(runs) || runs < 1) {
    console.error("usage: deno run -A bench/store_costs.ts --input FILE --dir DIR [--runs N]");
    Deno.exit(2);
  }
  await Deno.mkdir(values.dir, { recursive: true });
  const result = await measureStoreCosts({
    input: await Deno.readFile(values.input),
    dir: values.dir,
    runs,
    progress: (m) => console.error(`bench: store costs: ${m}`),
  });
  console.log(JSON.stringify(result));
}
