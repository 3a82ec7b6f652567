import assert from "node:assert/strict";
import { createPseudonymizer } from "../shared/pseudonymizer.ts";
import { checkDeidentified, createDeidentifier } from "../shared/deidentify.ts";
import { DEFAULT_POLICY } from "../shared/privacy_policy.ts";
import { DEPARTMENTS, EVENT_TYPES, generateConsultations, seededRandom } from "./healthcare_source.ts";

Deno.test("generateConsultations() covers 5 departments and every event type, reproducibly by seed", () => {
  const logs = generateConsultations(50, seededRandom(42), Date.UTC(2026, 0, 1));
  assert.equal(logs.length, 50);
  assert.deepStrictEqual(new Set(logs.map((l) => l.department)), new Set(DEPARTMENTS));
  assert.deepStrictEqual(new Set(logs.map((l) => l.event)), new Set(EVENT_TYPES));
  assert.ok(EVENT_TYPES.length >= 5);
  for (const l of logs) assert.match(l.patient_id, /^\d{6}$/);
  assert.deepStrictEqual(generateConsultations(50, seededRandom(42), Date.UTC(2026, 0, 1)), logs);
});

Deno.test("the default policy turns simulated logs into entries no detector finds anything in", () => {
  const p = createPseudonymizer(new Uint8Array(32).fill(1));
  const d = createDeidentifier(DEFAULT_POLICY, { pseudonymizer: p });
  const logs = generateConsultations(200, seededRandom(1), 0);
  assert.ok(logs.some((l) => String(l.details.note ?? "").includes("@")), "the simulator writes PII into notes");
  const out = logs.map((l) => d.apply({ ...l }));
  for (let i = 0; i < logs.length; i++) {
    assert.equal(out[i]!.patient_id, p.token(logs[i]!.patient_id, "pt"));
    assert.deepStrictEqual(checkDeidentified(out[i], DEFAULT_POLICY.detectors), []);
    assert.ok(!JSON.stringify(out[i]).includes(logs[i]!.patient_id));
  }
  assert.ok((d.stats.redactions.phone ?? 0) + (d.stats.redactions.email ?? 0) > 0);
  // Records of one patient stay linkable.
  const byRaw = new Map<string, Set<unknown>>();
  logs.forEach((l, i) => byRaw.set(l.patient_id, (byRaw.get(l.patient_id) ?? new Set()).add(out[i]!.patient_id)));
  for (const tokens of byRaw.values()) assert.equal(tokens.size, 1);
  assert.ok(byRaw.size < logs.length);
});
