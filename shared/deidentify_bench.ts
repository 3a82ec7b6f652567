/**
 * Throughput of the de-identification transform with the built-in healthcare
 * policy, over simulated consultation logs with a free-text note (one in five
 * notes holds a phone number, an e-mail or an SSN).
 *
 *     deno bench -A shared/deidentify_bench.ts     # Deno.bench timings
 *     deno run -A shared/deidentify_bench.ts       # entries per second on one core
 *
 * @module
 */
import { generateConsultations, seededRandom } from "../client/healthcare_source.ts";
import { createDeidentifier } from "./deidentify.ts";
import { DEFAULT_POLICY } from "./privacy_policy.ts";
import { createPseudonymizer } from "./pseudonymizer.ts";

const NOTES = [
  "Patient reports mild headache since Tuesday, no fever. Advised rest and fluids.",
  "Follow-up in two weeks to review blood pressure readings.",
  "Discussed medication side effects; patient tolerating treatment well.",
  "Patient reachable at (555) 123-4567 or jane@example.org, SSN 123-45-6789",
  "Rash on left forearm improving with topical steroid, continue for 7 days.",
  "Referred to physiotherapy for lower back pain, 6 sessions.",
  "Lab results reviewed with patient, HbA1c 6.1%, repeat in 3 months.",
  "Callback requested on 555-987-6543 after 5pm.",
  "No acute distress. Vitals within normal limits.",
  "Parent asked for a copy of the visit summary by e-mail to parent.smith@example.com",
];

/** `count` raw healthcare entries as plain objects, each with a `details.note`. */
export function benchEntries(count: number): Record<string, unknown>[] {
  const random = seededRandom(42);
  return generateConsultations(count, random, Date.UTC(2026, 0, 1)).map((log, i) => ({
    ...log,
    details: { ...log.details, note: NOTES[i % NOTES.length]! },
  }));
}

const ENTRIES = benchEntries(10_000);
const deidentifier = createDeidentifier(DEFAULT_POLICY, {
  pseudonymizer: createPseudonymizer(new Uint8Array(32).fill(1)),
});

Deno.bench("Deidentifier.apply(), default policy, 10,000 healthcare entries with notes", () => {
  for (const e of ENTRIES) deidentifier.apply(e);
});

if (import.meta.main) {
  for (let i = 0; i < 20; i++) for (const e of ENTRIES) deidentifier.apply(e);
  const rounds = 50;
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) for (const e of ENTRIES) deidentifier.apply(e);
  const seconds = (performance.now() - t0) / 1000;
  console.log(
    `${Math.round((rounds * ENTRIES.length) / seconds).toLocaleString("en")} entries/s (default policy, one core)`,
  );
}
