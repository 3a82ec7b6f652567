/**
 * `tlslog healthcare`: simulated telemedicine consultation logs, de-identified
 * in the process and sent through the same path as `send`.
 *
 * @module
 */
import { generateConsultations, seededRandom } from "../client/healthcare_source.ts";
import { DEFAULT_POLICY } from "../shared/privacy_policy.ts";
import {
  deidentifierFromFlags,
  deidentifySummary,
  formatSummary,
  POLICY_FLAGS,
  reportEvents,
  SEND_FLAGS,
  senderFromFlags,
} from "./client_common.ts";
import { type CommandSpec, formatHelp, intFlag, parseFlags, stringFlag } from "./flags.ts";

/** The command's flags and help. */
export const healthcareSpec: CommandSpec = {
  name: "healthcare",
  summary:
    "Send simulated telemedicine consultation logs, de-identified by a privacy policy (default: the built-in healthcare policy).",
  usage: "tlslog healthcare [flags]",
  flags: {
    ...SEND_FLAGS,
    count: { type: "string", default: "50", help: "number of consultation logs" },
    ...POLICY_FLAGS,
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
  // The built-in healthcare policy unless --policy names another.
  const deid = (await deidentifierFromFlags(flags, "healthcare", DEFAULT_POLICY))!;
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
      const entries = logs.map((log) =>
        JSON.stringify({ ...deid.deidentifier.apply({ ...log }), anon_key_id: deid.keyId })
      );
      await sender.add(entries, "healthcare", entries.map((_, i) => done + i + 1));
    }
    const summary = await sender.finish();
    events.stop();
    console.log(formatSummary(summary, (performance.now() - started) / 1000, deidentifySummary(deid)));
    return summary.rejected.length === 0 && summary.acknowledged === summary.entries ? 0 : 1;
  } finally {
    events.stop();
  }
}
