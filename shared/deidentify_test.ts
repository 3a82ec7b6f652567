import assert from "node:assert/strict";
import { checkDeidentified, createDeidentifier, FF1_REFUSED, MissingFf1KeyError, reidentify } from "./deidentify.ts";
import { createFf1Cipher } from "./ff1_cipher.ts";
import { DETECTORS } from "./pii_detectors.ts";
import { DEFAULT_POLICY, parsePolicy } from "./privacy_policy.ts";
import { createPseudonymizer } from "./pseudonymizer.ts";

const KEY = new Uint8Array(32).fill(7);
const NOTE = "Patient reachable at (555) 123-4567 or jane@example.org, SSN 123-45-6789";

function entry(): Record<string, unknown> {
  return {
    timestamp: "2026-03-01T10:00:00.000Z",
    event: "consultation_end",
    department: "cardiology",
    patient_id: "483920",
    clinician_id: "dr-0012",
    session_id: "s-0a1b2c3d",
    details: { duration_s: 900, outcome: "follow_up", note: NOTE },
  };
}

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null) {
    for (const child of Object.values(v)) deepFreeze(child);
    Object.freeze(v);
  }
  return v;
}

Deno.test("Deidentifier.apply() with the default policy redacts the note and tokenises patient_id", () => {
  const p = createPseudonymizer(KEY);
  const d = createDeidentifier(DEFAULT_POLICY, { pseudonymizer: p });
  const input = deepFreeze(entry());
  const out = d.apply(input);
  assert.deepStrictEqual(out, {
    ...entry(),
    patient_id: p.token("483920", "pt"),
    details: {
      duration_s: 900,
      outcome: "follow_up",
      note: "Patient reachable at [REDACTED:PHONE] or [REDACTED:EMAIL], SSN [REDACTED:SSN]",
    },
  });
  assert.deepStrictEqual(input, entry());
  assert.deepStrictEqual(d.stats, {
    entries: 1,
    pseudonymized: 1,
    dropped: 0,
    ff1Encrypted: 0,
    ff1Refused: 0,
    redactions: { ...Object.fromEntries(DEFAULT_POLICY.detectors.map((x) => [x.name, 0])), phone: 1, email: 1, ssn: 1 },
  });
  assert.deepStrictEqual(checkDeidentified(out, DEFAULT_POLICY.detectors), []);
});

Deno.test("Deidentifier.apply() gives the same token for the same patient and key, another for another key", () => {
  const a = createDeidentifier(DEFAULT_POLICY, { pseudonymizer: createPseudonymizer(KEY) });
  const b = createDeidentifier(DEFAULT_POLICY, { pseudonymizer: createPseudonymizer(KEY) });
  const c = createDeidentifier(DEFAULT_POLICY, { pseudonymizer: createPseudonymizer(new Uint8Array(32).fill(8)) });
  const t1 = a.apply(entry()).patient_id as string;
  assert.match(t1, /^pt_k[0-9a-f]{6}_[A-Za-z0-9_-]{22}$/);
  assert.equal(a.apply(entry()).patient_id, t1);
  assert.equal(b.apply(entry()).patient_id, t1);
  assert.notEqual(c.apply(entry()).patient_id, t1);
  assert.notEqual(a.apply({ ...entry(), patient_id: "483921" }).patient_id, t1);
});

Deno.test("Deidentifier.apply() in token mode maps the same e-mail to the same token", () => {
  const policy = parsePolicy(
    '{"version": 1, "scan": {"fields": ["note"]}, "detectors": ["email", "phone"], "replacement": {"email": "token"}}',
    "p.json",
  );
  const p = createPseudonymizer(KEY);
  const d = createDeidentifier(policy, { pseudonymizer: p });
  const t = p.token("jane@example.org", "email");
  assert.deepStrictEqual(
    d.apply({ note: "mail jane@example.org or Jane@Example.org, tel 555-123-4567", other: "jane@example.org" }),
    {
      note: `mail ${t} or ${t}, tel [REDACTED:PHONE]`,
      other: "jane@example.org",
    },
  );
  // Tokens are not themselves mistaken for identifiers by the server's check.
  assert.deepStrictEqual(checkDeidentified({ note: `mail ${t}`, id: p.token("483920") }, DEFAULT_POLICY.detectors), []);
});

Deno.test("Deidentifier.apply() drops fields, nested ones included, and scans only listed fields", () => {
  const policy = parsePolicy(
    '{"version": 1, "drop": ["ssn_raw", "details.address"], "scan": {"fields": ["details.note"]}, "detectors": ["ssn"]}',
    "p.json",
  );
  const d = createDeidentifier(policy, { pseudonymizer: createPseudonymizer(KEY) });
  const input = deepFreeze({
    ssn_raw: "123-45-6789",
    a: "SSN 123-45-6789",
    details: { address: "1 Main St", note: "SSN 123-45-6789", n: 1 },
  });
  assert.deepStrictEqual(d.apply(input), { a: "SSN 123-45-6789", details: { note: "SSN [REDACTED:SSN]", n: 1 } });
  assert.equal(d.stats.dropped, 2);
});

Deno.test("Deidentifier.apply() scans nested objects and arrays with '*' but not excepted fields", () => {
  const policy = parsePolicy(
    '{"version": 1, "pseudonymize": [{"field": "items.pid"}], "scan": {"fields": "*", "except": ["raw"]}, "detectors": ["email"]}',
    "p.json",
  );
  const p = createPseudonymizer(KEY);
  const d = createDeidentifier(policy, { pseudonymizer: p });
  const input = deepFreeze({
    items: [{ pid: "a@b.org", text: "to a@b.org" }, { text: "none" }],
    tags: ["x@y.org", "ok"],
    raw: "x@y.org",
    n: 3,
  });
  const out = d.apply(input);
  assert.deepStrictEqual(out, {
    items: [{ pid: p.token("a@b.org"), text: "to [REDACTED:EMAIL]" }, { text: "none" }],
    tags: ["[REDACTED:EMAIL]", "ok"],
    raw: "x@y.org",
    n: 3,
  });
  // Untouched subtrees are shared, not copied.
  assert.equal((out.items as unknown[])[1], input.items[1]);
});

Deno.test("Deidentifier.apply() returns the entry itself when nothing needs a change", () => {
  const d = createDeidentifier(DEFAULT_POLICY, { pseudonymizer: createPseudonymizer(KEY) });
  const input = deepFreeze({ event: "lab_result", details: { test: "CBC", status: "normal" } });
  assert.equal(d.apply(input), input);
});

Deno.test("Deidentifier.apply() encrypts FF1 fields and reidentify() reverses them with the key", () => {
  const policy = parsePolicy(
    '{"version": 1, "ff1": [{"field": "mrn", "alphabet": "0123456789", "keep": "-"}, {"field": "x.code", "alphabet": "0123456789"}],' +
      ' "detectors": ["ssn"], "scan": {"fields": "*"}}',
    "p.json",
  );
  const ff1 = createFf1Cipher(new Uint8Array(16).fill(3));
  const d = createDeidentifier(policy, { pseudonymizer: createPseudonymizer(KEY), ff1 });
  const input = deepFreeze({ mrn: "0012-345678", x: { code: 42 }, y: 1 });
  const out = d.apply(input);
  assert.match(out.mrn as string, /^\d{4}-\d{6}$/);
  assert.notEqual(out.mrn, input.mrn);
  assert.deepStrictEqual(out.x, { code: FF1_REFUSED });
  assert.deepStrictEqual([d.stats.ff1Encrypted, d.stats.ff1Refused], [1, 1]);
  assert.deepStrictEqual(reidentify(out, policy, ff1), { mrn: "0012-345678", x: { code: FF1_REFUSED }, y: 1 });
  assert.notEqual(reidentify(out, policy, createFf1Cipher(new Uint8Array(16))).mrn, input.mrn);
  assert.throws(() => createDeidentifier(policy, { pseudonymizer: createPseudonymizer(KEY) }), MissingFf1KeyError);
});

Deno.test("checkDeidentified() names the field paths that still hold identifiers", () => {
  const detectors = [DETECTORS.ssn!, DETECTORS.email!];
  assert.deepStrictEqual(
    checkDeidentified(
      { a: "ok", details: { note: "SSN 123-45-6789 and 987-65-4321" }, list: [{ m: "x@y.org" }] },
      detectors,
    ),
    [{ field: "details.note", detector: "ssn" }, { field: "list[0].m", detector: "email" }],
  );
});
