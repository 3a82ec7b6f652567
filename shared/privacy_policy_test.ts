import assert from "node:assert/strict";
import { DETECTOR_NAMES } from "./pii_detectors.ts";
import { DEFAULT_POLICY, jsonErrorOffset, loadPolicy, parsePolicy, PolicyError } from "./privacy_policy.ts";

function errorOf(text: string, source = "policy.json"): string {
  try {
    parsePolicy(text, source);
  } catch (err) {
    assert.ok(err instanceof PolicyError, `expected PolicyError, got ${err}`);
    return err.message;
  }
  throw new Error("policy was accepted");
}

Deno.test("DEFAULT_POLICY compiles from privacy_policy_default.json with every built-in detector", () => {
  assert.deepStrictEqual(DEFAULT_POLICY.detectors.map((d) => d.name), [...DETECTOR_NAMES]);
  assert.equal(DEFAULT_POLICY.scanFields, "*");
  assert.deepStrictEqual(DEFAULT_POLICY.pseudonymize[0], { path: ["patient_id"], prefix: "pt" });
  assert.equal(DEFAULT_POLICY.replacement.ssn, "redact");
});

Deno.test("parsePolicy() names the line and column of a JSON syntax error", () => {
  assert.equal(
    errorOf('{\n  "version": 1,\n  "drop": [x]\n}'),
    "policy.json: line 3 column 12: invalid JSON: Unexpected token 'x'",
  );
  assert.equal(
    errorOf('{\n  "version": 1,\n  "drop": ["a",]\n}'),
    "policy.json: line 3 column 16: invalid JSON: Unexpected token ']'",
  );
  assert.equal(
    errorOf('{\n  "version": 1\n  "drop": []\n}'),
    "policy.json: line 3 column 3: invalid JSON: Expected ',' or '}' after property value",
  );
  assert.equal(
    errorOf('{"version": 1'),
    "policy.json: line 1 column 14: invalid JSON: Expected ',' or '}' after property value",
  );
});

Deno.test("jsonErrorOffset() agrees with the positions V8 reports", () => {
  const texts = [
    '{"a": 1\n "b": 2}',
    '{"a": [1,2',
    '{"a": 1,}',
    '{"a":"x\u0001"}',
    '{"a": 1}}',
    '{\n"a": 01}',
    '["\\q"]',
  ];
  for (const t of texts) {
    let position = -1;
    try {
      JSON.parse(t);
    } catch (err) {
      position = Number(/at position (\d+)/.exec((err as Error).message)?.[1] ?? -1);
    }
    assert.equal(jsonErrorOffset(t), position, JSON.stringify(t));
  }
  const valid = '{"a": [true, null, -1.5e3, "\\u00e9"]}';
  assert.equal(jsonErrorOffset(valid), valid.length);
});

Deno.test("parsePolicy() refuses an unknown detector with its index and the known names", () => {
  assert.equal(
    errorOf('{"version": 1, "detectors": ["ssn", "email", "card", "phne"]}'),
    `policy.json: detectors[3]: unknown detector "phne"; known: ${DETECTOR_NAMES.join(", ")}`,
  );
});

Deno.test("parsePolicy() names the JSON path of schema errors", () => {
  const cases: [string, string][] = [
    ["[]", "policy.json: (root): expected an object, got an array"],
    ['{"version": 2}', "policy.json: version: expected 1, got 2"],
    ['{"version": 1, "pseudonymise": []}', "policy.json: pseudonymise: unknown key; known: "],
    [
      '{"version": 1, "pseudonymize": [{"field": "a"}, {"field": "b", "prefix": "X-"}]}',
      "policy.json: pseudonymize[1].prefix:",
    ],
    ['{"version": 1, "pseudonymize": [{"fild": "a"}]}', "policy.json: pseudonymize[0].fild: unknown key"],
    ['{"version": 1, "drop": ["details", "a..b"]}', "policy.json: drop[1]: expected a field name"],
    [
      '{"version": 1, "drop": ["details"], "pseudonymize": [{"field": "details.id"}]}',
      'policy.json: drop[0]: field "details" overlaps "details.id" at pseudonymize[0]',
    ],
    ['{"version": 1, "ff1": [{"field": "mrn", "alphabet": "0"}]}', "policy.json: ff1[0].alphabet: expected at least 2"],
    ['{"version": 1, "scan": {"fields": "all"}}', 'policy.json: scan.fields: expected "*" or an array'],
    ['{"version": 1, "detectors": ["ssn", "ssn"]}', 'policy.json: detectors[1]: detector "ssn" is listed twice'],
    ['{"version": 1, "custom": [{"label": "X", "pattern": "("}]}', "policy.json: custom[0].pattern:"],
    [
      '{"version": 1, "custom": [{"label": "ssn", "pattern": "x"}], "detectors": ["ssn"]}',
      "policy.json: custom[0].label:",
    ],
    [
      '{"version": 1, "detectors": ["ssn"], "replacement": {"ssn": "hash"}}',
      'policy.json: replacement.ssn: expected "redact" or "token"',
    ],
    [
      '{"version": 1, "detectors": ["ssn"], "replacement": {"email": "token"}}',
      'policy.json: replacement.email: no detector "email"',
    ],
    [
      '{"version": 1, "mrn_pattern": "MR\\\\d+"}',
      'policy.json: mrn_pattern: is set but "detectors" does not list "mrn"',
    ],
  ];
  for (const [text, start] of cases) {
    const message = errorOf(text);
    assert.ok(message.startsWith(start), `${text}\n  gave ${message}\n  want ${start}...`);
  }
});

Deno.test("parsePolicy() builds custom regex detectors named after their label", () => {
  const p = parsePolicy(
    '{"version": 1, "detectors": ["email"], "custom": [{"label": "INSURANCE_ID", "pattern": "INS-\\\\d{8}"}],' +
      ' "replacement": {"default": "token", "email": "redact"}}',
    "p.json",
  );
  assert.deepStrictEqual(p.detectors.map((d) => [d.name, d.label]), [["email", "EMAIL"], [
    "insurance_id",
    "INSURANCE_ID",
  ]]);
  assert.deepStrictEqual(p.replacement, { email: "redact", insurance_id: "token" });
  const custom = p.detectors[1]!;
  assert.deepStrictEqual(custom.find("policy INS-12345678, INS-123"), [{
    start: 7,
    end: 19,
    detector: "insurance_id",
  }]);
});

Deno.test("parsePolicy() uses mrn_pattern for the mrn detector", () => {
  const p = parsePolicy('{"version": 1, "detectors": ["mrn"], "mrn_pattern": "\\\\bHX\\\\d{7}\\\\b"}', "p.json");
  assert.deepStrictEqual(p.detectors[0]!.find("chart HX1234567 seen").map((m) => [m.start, m.end]), [[6, 15]]);
});

Deno.test("loadPolicy() reads a file and names it in errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/policy.json`;
    await Deno.writeTextFile(path, '{"version": 1, "drop": ["ssn_raw"]}');
    assert.deepStrictEqual((await loadPolicy(path)).drop, [["ssn_raw"]]);
    await Deno.writeTextFile(path, '{"version": 1, "detectors": [\n  "phne"\n]}');
    await assert.rejects(
      loadPolicy(path),
      (err) => err instanceof PolicyError && err.message.startsWith(`${path}: detectors[0]:`),
    );
    await assert.rejects(loadPolicy(`${dir}/missing.json`), PolicyError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
