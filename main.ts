/**
 * tlslog: ships sensitive logs over TLS in gzip-compressed frames to a
 * collector that stores them in rotating files.
 *
 * This file dispatches the subcommands and is the only place that exits.
 *
 * @module
 */
import { runDemo } from "./cli/demo.ts";
import { UsageError } from "./cli/flags.ts";
import { runHealthcare } from "./cli/healthcare.ts";
import { runHealthcheck } from "./cli/healthcheck.ts";
import { runSend } from "./cli/send.ts";
import { runReidentify } from "./cli/reidentify.ts";
import { runReport } from "./cli/report.ts";
import { runServe } from "./cli/serve.ts";
import { runVerify } from "./cli/verify.ts";
import { runCat } from "./cli/cat.ts";

/** Version printed by `tlslog --version`. */
export const VERSION = "0.1.0";

const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>; summary: string }> = {
  serve: { run: runServe, summary: "run the collector and its dashboard" },
  send: { run: runSend, summary: "send JSON lines from files or stdin" },
  healthcare: { run: runHealthcare, summary: "send simulated, de-identified consultation logs" },
  healthcheck: { run: runHealthcheck, summary: "exit 0 if a collector answers, 1 if not" },
  demo: { run: runDemo, summary: "collector + dashboard + a live simulated stream" },
  report: { run: runReport, summary: "report on de-identification in a data directory" },
  reidentify: { run: runReidentify, summary: "decrypt FF1 fields with the key (audited)" },
  verify: { run: runVerify, summary: "check a store against its hash chain and signed checkpoints" },
  cat: { run: runCat, summary: "print stored entries (plain, compressed, encrypted files)" },
};

/** Top-level help. */
export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    `tlslog ${VERSION}: secure log shipping over TLS`,
    "",
    "Usage: tlslog <command> [flags]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    "",
    'Run "tlslog <command> --help" for the flags of a command.',
  ].join("\n");
}

/** Runs tlslog with `args`; resolves to the process exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined) {
    console.error(usage());
    return 2;
  }
  if (name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return 0;
  }
  if (name === "--version" || name === "-V") {
    console.log(`tlslog ${VERSION}`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`tlslog: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`tlslog ${err.command}: ${err.message}\nRun "tlslog ${err.command} --help" for usage.`);
      return 2;
    }
    const e = err instanceof Error ? err : new Error(String(err));
    console.error(`tlslog ${name}: ${e.name === "Error" ? "error" : e.name}: ${e.message}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
