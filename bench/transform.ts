/**
 * The client's de-identification step on its own: the built-in healthcare
 * policy applied to simulated consultation logs (about one in nine carries a
 * phone number or an e-mail in its note), on one core.
 *
 * @module
 */
import { generateConsultations, seededRandom } from "../client/healthcare_source.ts";
import { createDeidentifier } from "../shared/deidentify.ts";
import { DEFAULT_POLICY } from "../shared/privacy_policy.ts";
import { createPseudonymizer } from "../shared/pseudonymizer.ts";

/** What the transform measurement found. */
export interface TransformResult {
  entries: number;
  seconds: number;
  entriesPerSecond: number;
  redactions: Record<string, number>;
}

/** Applies the built-in policy to `count` entries (after a warm-up) and times it. */
export function measureTransform(count = 300_000): TransformResult {
  const logs = generateConsultations(count, seededRandom(11), Date.UTC(2026, 0, 1));
  const key = new Uint8Array(32).fill(9);
  createDeidentifier(DEFAULT_POLICY, { pseudonymizer: createPseudonymizer(key) }).apply({ ...logs[0]! });
  const d = createDeidentifier(DEFAULT_POLICY, { pseudonymizer: createPseudonymizer(key) });
  // Warm-up on the first tenth, so the JIT has compiled the hot paths.
  for (let i = 0; i < count / 10; i++) d.apply({ ...logs[i]! });
  const started = performance.now();
  for (const log of logs) d.apply({ ...log });
  const seconds = (performance.now() - started) / 1000;
  return { entries: count, seconds, entriesPerSecond: count / seconds, redactions: d.stats.redactions };
}

/** Measures in a fresh Deno process, so the heap of earlier scenarios does not weigh on it. */
export async function measureTransformInChild(): Promise<TransformResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`transform measurement failed with exit code ${out.code}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

if (import.meta.main) console.log(JSON.stringify(measureTransform()));
