/**
 * The long fuzz campaign (tests/fuzz_support.ts): at least 100,000 malformed
 * inputs over hundreds of connections against a `tlslog serve` child process
 * while `tlslog send` ships 100,000 numbered entries in 10 runs spread over
 * the campaign. Prints a table (inputs by kind, connections, duration, peak
 * RSS, entries stored, counters, checks) and fails when a Done-when condition
 * fails: serve crashed or missed a probe, peak RSS >= 256 MB, a good entry
 * lost or stored twice, refusal counters that do not account for the fuzzer,
 * or serve not exiting 0 on SIGTERM.
 *
 *   deno task bench --only fuzz
 *   deno run -A bench/fuzz.ts [--inputs 100000] [--connections 400] [--entries 100000] [--sends 10]
 *                             [--parallel 32] [--seed N] [--weights kind=w,...]
 *
 * `--weights v1_bomb=0,v2=0` narrows a problem down (kinds as in the table; connection types v1, v2,
 * raw, bad_alpn, tls_inject). Progress goes to stderr, the report to stdout.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { formatCampaignReport, runCampaign } from "../tests/fuzz_support.ts";

/** Options of {@linkcode runFuzzBench}; the defaults are the numbers. */
export interface FuzzBenchOptions {
  inputs?: number;
  connections?: number;
  entries?: number;
  sends?: number;
  parallel?: number;
  seed?: number;
  weights?: Record<string, number>;
  /** The fuzzer's deadline. Default 15 minutes. */
  deadlineMs?: number;
  log?: (message: string) => void;
}

/** Runs the long campaign; resolves to whether every condition held, and the report. */
export async function runFuzzBench(o: FuzzBenchOptions = {}): Promise<{ ok: boolean; text: string }> {
  const seed = o.seed ?? 1_000_003;
  const report = await runCampaign({
    inputs: o.inputs ?? 100_000,
    connections: o.connections ?? 400,
    entries: o.entries ?? 100_000,
    sends: o.sends ?? 10,
    parallel: o.parallel ?? 32,
    seed,
    weights: o.weights,
    deadlineMs: o.deadlineMs ?? 15 * 60_000,
    log: o.log,
  });
  const lines = [formatCampaignReport(report), ""];
  if (report.failures.length > 0) {
    lines.push("FAILED:", ...report.failures.map((f) => `- ${f}`));
  } else {
    lines.push("All conditions held.");
  }
  return { ok: report.failures.length === 0, text: lines.join("\n") };
}

function positive(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) {
    console.error(`fuzz: --${name} must be a positive integer, got "${text}"`);
    Deno.exit(2);
  }
  return n;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      inputs: { type: "string" },
      connections: { type: "string" },
      entries: { type: "string" },
      sends: { type: "string" },
      parallel: { type: "string" },
      seed: { type: "string" },
      weights: { type: "string" },
    },
  });
  const weights = values.weights === undefined ? undefined : Object.fromEntries(
    values.weights.split(",").filter((p) => p).map((p) => {
      const [k, v] = p.split("=");
      return [k!, Number(v)];
    }),
  );
  const { ok, text } = await runFuzzBench({
    inputs: positive("inputs", values.inputs),
    connections: positive("connections", values.connections),
    entries: positive("entries", values.entries),
    sends: positive("sends", values.sends),
    parallel: positive("parallel", values.parallel),
    seed: positive("seed", values.seed),
    weights,
    log: (m) => console.error(`fuzz: ${m}`),
  });
  console.log(text);
  if (!ok) Deno.exitCode = 1;
}
