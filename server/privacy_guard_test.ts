import assert from "node:assert/strict";
import { getDetectors } from "../shared/pii_detectors.ts";
import { createPrivacyGuard, describeFindings } from "./privacy_guard.ts";

const detectors = getDetectors(["ssn", "card", "email"]);
const raw = { patient_id: "pt_k1_abc", note: "SSN 123-45-6789", contact: { mail: "jane@example.org" } };
const clean = { patient_id: "pt_k1_abc", note: "follow-up in two weeks" };
const marked = { patient_id: `pt_k1a2b3c_${"A".repeat(22)}`, note: "call [REDACTED:PHONE]" };

Deno.test("createPrivacyGuard('reject') refuses an identifiable entry, naming field and detector, and counts it", () => {
  const guard = createPrivacyGuard("reject", detectors);
  assert.deepStrictEqual(guard.check(JSON.stringify(clean), clean), { action: "store", line: JSON.stringify(clean) });
  const verdict = guard.check(JSON.stringify(raw), raw);
  assert.equal(verdict.action, "reject");
  assert.equal(
    verdict.action === "reject" && verdict.error,
    'entry is not de-identified: field "note" holds ssn; field "contact.mail" holds email (--require-deidentified reject)',
  );
  assert.deepStrictEqual(guard.stats, {
    mode: "reject",
    entries_checked: 2,
    entries_identifiable: 1,
    rejected: 1,
    quarantined: 0,
    redacted: 0,
    by_detector: { ssn: 1, email: 1 },
    fields_pseudonymised: 0,
    key_ids: {},
    redactions: {},
  });
});

Deno.test("createPrivacyGuard('redact') stores a fixed copy; 'quarantine' sets the entry aside", () => {
  const redact = createPrivacyGuard("redact", detectors);
  const fixed = redact.check(JSON.stringify(raw), raw);
  assert.deepStrictEqual(JSON.parse(fixed.line), {
    patient_id: "pt_k1_abc",
    note: "SSN [REDACTED:SSN]",
    contact: { mail: "[REDACTED:EMAIL]" },
  });
  assert.equal(fixed.action, "store");
  assert.equal(redact.stats.redacted, 1);
  const quarantine = createPrivacyGuard("quarantine", detectors);
  assert.equal(quarantine.check(JSON.stringify(raw), raw).action, "quarantine");
  assert.equal(quarantine.stats.quarantined, 1);
  assert.equal(describeFindings([]), "");
});

Deno.test("createPrivacyGuard() counts the tokens by key id and the redactions senders left", () => {
  const guard = createPrivacyGuard("reject", detectors);
  assert.equal(guard.check(JSON.stringify(marked), marked).action, "store");
  assert.deepStrictEqual(
    [guard.stats.fields_pseudonymised, guard.stats.key_ids, guard.stats.redactions],
    [1, { k1a2b3c: 1 }, { PHONE: 1 }],
  );
});

Deno.test("createPrivacyGuard() does not look into FF1 fields, whose ciphertext keeps an identifier's shape", () => {
  const ff1Ssn = { ssn: "518-44-2093", note: "ok" };
  assert.equal(createPrivacyGuard("reject", detectors).check(JSON.stringify(ff1Ssn), ff1Ssn).action, "reject");
  const guard = createPrivacyGuard("reject", detectors, new Set(["ssn"]));
  assert.equal(guard.check(JSON.stringify(ff1Ssn), ff1Ssn).action, "store");
});
