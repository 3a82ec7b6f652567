import assert from "node:assert/strict";
import { join } from "node:path";
import { DEFAULT_POLICY } from "../shared/privacy_policy.ts";
import { buildComplianceReport } from "./compliance_report.ts";
import { dataFileName } from "./rotating_store.ts";

Deno.test("buildComplianceReport() counts tokens by key id, redactions, violations with their place, and the quarantine", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const tok = (k: string) => `pt_${k}_${"A".repeat(22)}`;
    await Deno.writeTextFile(
      join(dir, dataFileName(1)),
      [
        { patient_id: tok("k1a2b3c"), note: "call [REDACTED:PHONE]" },
        { patient_id: tok("k1a2b3c"), note: "mail [REDACTED:EMAIL], [REDACTED:PHONE]" },
      ].map((e) => JSON.stringify(e) + "\n").join(""),
    );
    await Deno.writeTextFile(
      join(dir, dataFileName(2)),
      JSON.stringify({ patient_id: tok("k9f9f9f"), note: "SSN 123-45-6789" }) + "\nnot json\n",
    );
    await Deno.mkdir(join(dir, "quarantine"));
    await Deno.writeTextFile(join(dir, "quarantine", "quarantine.jsonl"), '{"a":1}\n{"b":2}\n');
    assert.deepStrictEqual(await buildComplianceReport(dir, DEFAULT_POLICY.detectors), {
      data_files: 2,
      entries_checked: 3,
      fields_pseudonymised: 3,
      key_ids: { k1a2b3c: 2, k9f9f9f: 1 },
      redactions: { PHONE: 2, EMAIL: 1 },
      entries_with_violations: 1,
      violations_by_detector: { ssn: 1 },
      examples: [{ file: dataFileName(2), line: 1, field: "note", detector: "ssn" }],
      quarantined: 2,
      unreadable_lines: 1,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
