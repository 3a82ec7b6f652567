/**
 * `tlslog healthcare`: simulated telemedicine consultation logs, de-identified
 * in the process and sent through the same path as `send`.
 *
 * @module
 */
import { defaultKeyPath, loadAnonKey } from "../client/anon_key.ts";
import { deidentify, generateConsultations, seededRandom } from "../client/healthcare_source.ts";
import { createPseudonymizer } from "../shared/pseudonymizer.ts";
import { formatSummary, reportEvents, SEND_FLAGS, senderFromFlags } from "./client_common.ts";
import { type CommandSpec, formatHelp, intFlag, parseFlags, stringFlag } from "./flags.ts";

/** The command's flags and help. */
export const healthcareSpec: CommandSpec = {
  name: "healthcare",
  summary: "Send simulated telemedicine consultation logs, patient IDs pseudonymised with keyed HMAC-SHA256.",
  usage: "tlslog healthcare [flags]",
  flags: {
    ...SEND_FLAGS,
    count: { type: "string", default: "50", help: "number of consultation logs" },
    "anon-key-file": {
      type: "string",
      arg: "file",
      help: "pseudonymisation key (hex or base64, >= 16 bytes); else $TLSLOG_ANON_KEY; else one is created",
    },
    seed: { type: "string", arg: "n", help: "seed for reproducible logs (default: random)" },
  },
  examples: [
    "tlslog healthcare --ca certs/ca.crt",
    "TLSLOG_ANON_KEY=$(openssl rand -hex 32) tlslog healthcare --count 500",
  ],
};

/** Runs `tlslog healthcare`; resolves to the exit code. */
export async function runHealthcare(args: string[]): Promise<number> {
  const flags = parseFlags(healthcareSpec, args);
  if (flags.help) {
    console.log(formatHelp(healthcareSpec));
    return 0;
  }
  const count = intFlag(flags, healthcareSpec, "count", 1, 100_000_000);
  const seedText = stringFlag(flags, "seed");
  const seed = seedText === undefined ? undefined : intFlag(flags, healthcareSpec, "seed", 0, 2 ** 32 - 1);
  const loaded = loadAnonKey(stringFlag(flags, "anon-key-file"), Deno.env.get("TLSLOG_ANON_KEY"), defaultKeyPath());
  if (loaded.createdPath) {
    console.error(
      `healthcare: created a new pseudonymisation key at ${loaded.createdPath} (mode 0600); keep it to link tokens across runs`,
    );
  }
  const pseudonymizer = createPseudonymizer(loaded.key);
  const events = reportEvents("healthcare");
  const sender = senderFromFlags(flags, healthcareSpec, events.onEvent, (m) => console.error(m));
  events.track(sender);
  const random = seed === undefined ? Math.random : seededRandom(seed);
  const started = performance.now();
  try {
    const chunk = 10_000;
    for (let done = 0; done < count; done += chunk) {
      const n = Math.min(chunk, count - done);
      const logs = generateConsultations(n, random, Date.now());
      const entries = logs.map((log) => JSON.stringify(deidentify(log, pseudonymizer)));
      await sender.add(entries, "healthcare", entries.map((_, i) => done + i + 1));
    }
    const summary = await sender.finish();
    events.stop();
    console.log(formatSummary(summary, (performance.now() - started) / 1000, [["key id", pseudonymizer.keyId]]));
    return summary.rejected.length === 0 && summary.acknowledged === summary.entries ? 0 : 1;
  } finally {
    events.stop();
  }
}
