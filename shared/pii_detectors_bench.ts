/**
 * Cost of `findPii` over every built-in detector on typical 100-200 character
 * log messages. Run with `deno bench -A shared/pii_detectors_bench.ts`.
 *
 * @module
 */
import { DETECTOR_NAMES, findPii, getDetectors } from "./pii_detectors.ts";

const ALL = getDetectors(DETECTOR_NAMES);

/** Messages as free-text fields carry them: most hold nothing to redact. */
const CLEAN = [
  "Patient reported mild headache after starting lisinopril 10mg; advised to monitor blood pressure twice daily.",
  "Video consultation ended normally after 23 minutes; follow-up scheduled in two weeks with cardiology.",
  "Lab result HbA1c 6.8% reviewed with patient, diet plan updated, repeat test in 3 months at 2024-05-01.",
  "2024-03-15T10:22:01.123Z record_access export by dr-0012 reason=treatment session s-9f3a21bc took 184 ms",
];
const DIRTY = [
  "Patient called from (555) 123-4567 about refill of amoxicillin 500mg; callback requested before 5pm today.",
  "Intake note: DOB: 03/14/1982, MRN: 00123456, email anna.smith@example.com, prefers phone over video.",
  "Upstream 10.20.30.40 rejected Authorization: Bearer abc123def456ghi789jkl012 for client v10.0.19041.",
  "payment declined for card 4111 1111 1111 1111; password=hunter2 found in free text, ticket escalated.",
];
const MIXED = [...CLEAN, ...CLEAN, ...CLEAN, ...DIRTY];

Deno.bench("findPii, all detectors, clean 100-200 char message", { group: "findPii", baseline: true }, () => {
  for (const m of CLEAN) findPii(m, ALL);
});

Deno.bench("findPii, all detectors, message with PII", { group: "findPii" }, () => {
  for (const m of DIRTY) findPii(m, ALL);
});

Deno.bench("findPii, all detectors, 3:1 clean:PII mix (per message)", { group: "findPii" }, () => {
  for (const m of MIXED) findPii(m, ALL);
});
