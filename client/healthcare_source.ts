/**
 * Simulated telemedicine consultation logs, and their de-identification:
 * patient IDs become keyed pseudonyms before an entry leaves the process.
 *
 * @module
 */

/** The five simulated departments. */
export const DEPARTMENTS = ["cardiology", "dermatology", "pediatrics", "psychiatry", "radiology"] as const;

/** The simulated event types. */
export const EVENT_TYPES = [
  "consultation_start",
  "consultation_end",
  "prescription_issued",
  "lab_result",
  "record_access",
  "vitals_recorded",
] as const;

/** A consultation log as a clinic system would write it, raw patient ID included. */
export interface RawConsultationLog {
  timestamp: string;
  event: (typeof EVENT_TYPES)[number];
  department: (typeof DEPARTMENTS)[number];
  /** Six-digit medical record number: the identifier that must not leave the host. */
  patient_id: string;
  clinician_id: string;
  session_id: string;
  details: Record<string, string | number>;
}

const MEDICATIONS = ["atorvastatin 20mg", "lisinopril 10mg", "amoxicillin 500mg", "sertraline 50mg", "ibuprofen 400mg"];
const TESTS = ["HbA1c", "lipid panel", "CBC", "TSH", "CRP"];
const ACCESS = ["view", "update", "export"];

function pick<T>(items: readonly T[], random: () => number): T {
  return items[Math.floor(random() * items.length)]!;
}

/**
 * A deterministic PRNG (mulberry32) for reproducible runs: the same seed
 * gives the same logs.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Generates `count` consultation logs. Each department gets an equal share in
 * turn; patients are drawn from a small pool so that one patient recurs.
 */
export function generateConsultations(count: number, random: () => number, nowMs: number): RawConsultationLog[] {
  const patients = Array.from(
    { length: Math.max(5, Math.ceil(count / 4)) },
    () => String(100000 + Math.floor(random() * 900000)),
  );
  const logs: RawConsultationLog[] = [];
  for (let i = 0; i < count; i++) {
    const event = EVENT_TYPES[i % EVENT_TYPES.length]!;
    logs.push({
      timestamp: new Date(nowMs - (count - i) * 1000).toISOString(),
      event,
      department: DEPARTMENTS[i % DEPARTMENTS.length]!,
      patient_id: pick(patients, random),
      clinician_id: `dr-${String(1 + Math.floor(random() * 40)).padStart(4, "0")}`,
      session_id: `s-${Math.floor(random() * 0xffffffff).toString(16).padStart(8, "0")}`,
      details: detailsFor(event, random),
    });
  }
  return logs;
}

function phoneNumber(random: () => number): string {
  const n = (k: number) => String(Math.floor(random() * 10 ** k)).padStart(k, "0");
  return `(${200 + Math.floor(random() * 700)}) ${200 + Math.floor(random() * 700)}-${n(4)}`;
}

function detailsFor(event: RawConsultationLog["event"], random: () => number): Record<string, string | number> {
  switch (event) {
    case "consultation_start":
      return { channel: pick(["video", "phone", "chat"], random) };
    case "consultation_end":
      // Free text as clinicians write it: identifiers the policy must find and redact.
      return {
        duration_s: 300 + Math.floor(random() * 2400),
        outcome: pick(["follow_up", "resolved", "referred"], random),
        note: pick([
          `Patient asked to be called back at ${phoneNumber(random)} about results.`,
          `Summary sent to patient${Math.floor(random() * 1000)}@example.org as requested.`,
          "Follow-up in two weeks; no changes to medication.",
        ], random),
      };
    case "prescription_issued":
      return { medication: pick(MEDICATIONS, random), refills: Math.floor(random() * 4) };
    case "lab_result":
      return { test: pick(TESTS, random), status: pick(["normal", "abnormal", "pending_review"], random) };
    case "record_access":
      return { action: pick(ACCESS, random), reason: "treatment" };
    case "vitals_recorded":
      return { heart_rate: 55 + Math.floor(random() * 50), systolic: 100 + Math.floor(random() * 50) };
  }
}
