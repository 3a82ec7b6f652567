import assert from "node:assert/strict";
import { createPseudonymizer } from "../shared/pseudonymizer.ts";
import { deidentify, DEPARTMENTS, EVENT_TYPES, generateConsultations, seededRandom } from "./healthcare_source.ts";

Deno.test("generateConsultations() covers 5 departments and every event type, reproducibly by seed", () => {
  const logs = generateConsultations(50, seededRandom(42), Date.UTC(2026, 0, 1));
  assert.equal(logs.length, 50);
  assert.deepStrictEqual(new Set(logs.map((l) => l.department)), new Set(DEPARTMENTS));
  assert.deepStrictEqual(new Set(logs.map((l) => l.event)), new Set(EVENT_TYPES));
  assert.ok(EVENT_TYPES.length >= 5);
  for (const l of logs) assert.match(l.patient_id, /^\d{6}$/);
  assert.deepStrictEqual(generateConsultations(50, seededRandom(42), Date.UTC(2026, 0, 1)), logs);
});

Deno.test("deidentify() replaces the patient ID with a stable keyed token and leaves no raw ID", () => {
  const p = createPseudonymizer(new Uint8Array(32).fill(1));
  const logs = generateConsultations(50, seededRandom(1), 0);
  const out = logs.map((l) => deidentify(l, p));
  for (let i = 0; i < logs.length; i++) {
    assert.equal(out[i]!.patient_id, p.token(logs[i]!.patient_id));
    assert.equal(out[i]!.anon_key_id, p.keyId);
    assert.ok(!JSON.stringify(out[i]).includes(logs[i]!.patient_id));
  }
  // Records of one patient stay linkable.
  const byRaw = new Map<string, Set<unknown>>();
  logs.forEach((l, i) => byRaw.set(l.patient_id, (byRaw.get(l.patient_id) ?? new Set()).add(out[i]!.patient_id)));
  for (const tokens of byRaw.values()) assert.equal(tokens.size, 1);
  assert.ok(byRaw.size < logs.length);
});
