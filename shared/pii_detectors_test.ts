import assert from "node:assert/strict";
import {
  createMrnDetector,
  createRegexDetector,
  type Detector,
  DETECTOR_NAMES,
  DETECTORS,
  findPii,
  getDetectors,
  InvalidPatternError,
  isIpv6,
  isLuhnValid,
  type PiiMatch,
  redactText,
  UnknownDetectorError,
} from "./pii_detectors.ts";

/** A detector that reports fixed spans, to test overlap resolution on its own. */
function fixed(name: string, spans: [number, number][]): Detector {
  return { name, label: name.toUpperCase(), find: () => spans.map(([start, end]) => ({ start, end, detector: name })) };
}

function found(text: string, names: readonly string[]): [string, string][] {
  return findPii(text, getDetectors(names)).map((m) => [m.detector, text.slice(m.start, m.end)]);
}

Deno.test("DETECTOR_NAMES lists every built-in detector, each under its own name", () => {
  assert.deepStrictEqual(DETECTOR_NAMES, [
    "ssn",
    "phone",
    "email",
    "ipv4",
    "ipv6",
    "card",
    "mrn",
    "api_key",
    "bearer",
    "jwt",
    "password",
    "url_credentials",
    "dob",
  ]);
  assert.deepStrictEqual(DETECTOR_NAMES.map((n) => DETECTORS[n]!.name), DETECTOR_NAMES);
});

Deno.test("getDetectors() returns the detectors in the order asked", () => {
  assert.deepStrictEqual(getDetectors(["email", "ssn"]), [DETECTORS.email, DETECTORS.ssn]);
});

Deno.test("getDetectors() rejects an unknown name and lists the known ones", () => {
  assert.throws(
    () => getDetectors(["ssn", "passport"]),
    new UnknownDetectorError(`unknown detector "passport"; known: ${DETECTOR_NAMES.join(", ")}`),
  );
  assert.throws(() => getDetectors(["toString"]), UnknownDetectorError);
});

Deno.test("findPii() keeps the longer of two overlapping matches", () => {
  const short = fixed("short", [[5, 10]]);
  const long = fixed("long", [[3, 20]]);
  assert.deepStrictEqual(findPii("x".repeat(30), [short, long]), [{ start: 3, end: 20, detector: "long" }]);
});

Deno.test("findPii() breaks a tie in length by detector order", () => {
  const a = fixed("a", [[2, 8]]);
  const b = fixed("b", [[4, 10]]);
  assert.deepStrictEqual(findPii("x".repeat(12), [a, b]), [{ start: 2, end: 8, detector: "a" }]);
  assert.deepStrictEqual(findPii("x".repeat(12), [b, a]), [{ start: 4, end: 10, detector: "b" }]);
});

Deno.test("findPii() returns touching and separate matches sorted by start", () => {
  const a = fixed("a", [[10, 14], [0, 4]]);
  const b = fixed("b", [[4, 10]]);
  assert.deepStrictEqual(findPii("x".repeat(20), [a, b]), [
    { start: 0, end: 4, detector: "a" },
    { start: 4, end: 10, detector: "b" },
    { start: 10, end: 14, detector: "a" },
  ]);
});

Deno.test("findPii() lets a JWT in a bearer header go to the detector listed first", () => {
  const token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
  const text = `Authorization: Bearer ${token}`;
  assert.deepStrictEqual(found(text, ["bearer", "jwt"]), [["bearer", token]]);
  assert.deepStrictEqual(found(text, ["jwt", "bearer"]), [["jwt", token]]);
});

Deno.test("findPii() prefers an IPv4-mapped IPv6 address over the IPv4 inside it", () => {
  assert.deepStrictEqual(found("from ::ffff:192.0.2.128 ok", ["ipv4", "ipv6"]), [["ipv6", "::ffff:192.0.2.128"]]);
});

Deno.test("redactText() replaces each match and reports offsets into the original text", () => {
  const text = "call (555) 123-4567 or mail ann@example.com, password=hunter2";
  const result = redactText(text, getDetectors(DETECTOR_NAMES), (m) => `[REDACTED:${DETECTORS[m.detector]!.label}]`);
  const matches: PiiMatch[] = [
    { start: 5, end: 19, detector: "phone" },
    { start: 28, end: 43, detector: "email" },
    { start: 54, end: 61, detector: "password" },
  ];
  assert.deepStrictEqual(result, {
    text: "call [REDACTED:PHONE] or mail [REDACTED:EMAIL], password=[REDACTED:PASSWORD]",
    matches,
  });
  assert.deepStrictEqual(matches.map((m) => text.slice(m.start, m.end)), [
    "(555) 123-4567",
    "ann@example.com",
    "hunter2",
  ]);
});

Deno.test("redactText() passes the matched text to replace() and leaves clean text alone", () => {
  const seen: string[] = [];
  const result = redactText("SSN 123-45-6789.", [DETECTORS.ssn!], (_m, original) => {
    seen.push(original);
    return "#".repeat(original.length);
  });
  assert.deepStrictEqual([result.text, seen], ["SSN ###########.", ["123-45-6789"]]);
  assert.deepStrictEqual(redactText("nothing here", [DETECTORS.ssn!], () => "x"), {
    text: "nothing here",
    matches: [],
  });
});

Deno.test("createRegexDetector() reports whole matches, or only the value group", () => {
  const ticket = createRegexDetector("ticket", "TICKET", "TCK-\\d{6}");
  assert.deepStrictEqual(ticket.find("see TCK-123456 and TCK-654321"), [
    { start: 4, end: 14, detector: "ticket" },
    { start: 19, end: 29, detector: "ticket" },
  ]);
  const member = createRegexDetector("member", "MEMBER", "member id[: ]+(?<value>[A-Z]{2}\\d{6})", "i");
  assert.deepStrictEqual(member.find("Member ID: AB123456 verified"), [{ start: 11, end: 19, detector: "member" }]);
});

Deno.test("createRegexDetector() rejects a pattern that does not compile, naming pattern and reason", () => {
  assert.throws(() => createRegexDetector("bad", "BAD", "(unclosed"), (e: unknown) => {
    assert.ok(e instanceof InvalidPatternError);
    assert.match(e.message, /^pattern "\(unclosed" for detector "bad" is invalid: .*Unterminated group/);
    return true;
  });
  assert.throws(() => createRegexDetector("bad", "BAD", "a", "q"), InvalidPatternError);
});

Deno.test("createRegexDetector() rejects patterns that can match the empty string", () => {
  for (const pattern of ["a*", "\\b", "(?=a)", "x?", "|a", "(?:)"]) {
    assert.throws(
      () => createRegexDetector("empty", "EMPTY", pattern),
      new InvalidPatternError(`pattern ${JSON.stringify(pattern)} for detector "empty" matches the empty string`),
    );
  }
});

Deno.test("createMrnDetector() uses labelled contexts by default and accepts a custom pattern", () => {
  assert.deepStrictEqual(createMrnDetector().find("MRN: 00123456, order 12345678"), [
    { start: 5, end: 13, detector: "mrn" },
  ]);
  assert.deepStrictEqual(createMrnDetector("\\bPT\\d{7}\\b").find("id PT1234567"), [
    { start: 3, end: 12, detector: "mrn" },
  ]);
});

Deno.test("isLuhnValid() accepts card numbers and rejects one wrong digit", () => {
  assert.deepStrictEqual(
    ["4111111111111111", "378282246310005", "5555555555554444", "4111111111111112", "79927398710", "", "12a4"]
      .map(isLuhnValid),
    [true, true, true, false, false, false, false],
  );
});

Deno.test("card finds Luhn-valid brand numbers only", () => {
  const text = "4111 1111 1111 1111, 4111 1111 1111 1112, 9111111111111119, 3782-822463-10005";
  assert.deepStrictEqual(found(text, ["card"]), [["card", "4111 1111 1111 1111"], ["card", "3782-822463-10005"]]);
});

Deno.test("ssn applies the SSA rules and wants a keyword for bare digits", () => {
  const text = "123-45-6789 000-12-3456 666-12-3456 912-34-5678 123-00-4567 order 123456789 SSN: 123456789";
  assert.deepStrictEqual(found(text, ["ssn"]), [["ssn", "123-45-6789"], ["ssn", "123456789"]]);
  assert.deepStrictEqual(found(text, ["ssn"]).length, 2);
});

Deno.test("isIpv6() accepts full, compressed and IPv4-mapped forms", () => {
  assert.deepStrictEqual(
    ["::1", "2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "::ffff:10.0.0.1", "1:2:3", "1::2::3", "12:30:45"]
      .map(isIpv6),
    [true, true, true, true, false, false, false],
  );
});

Deno.test("password and dob report the value, not the key", () => {
  assert.deepStrictEqual(found(`{"password":"s3cret!","dob":"1980-03-14"}`, ["password", "dob"]), [
    ["password", "s3cret!"],
    ["dob", "1980-03-14"],
  ]);
  assert.deepStrictEqual(found("created 2024-01-15T10:00:00Z; DOB updated at 2024-01-15T10:00:00Z", ["dob"]), []);
});

Deno.test("url_credentials reports user:password only", () => {
  assert.deepStrictEqual(found("postgres://app:pa55@db:5432/x and https://host/@me", ["url_credentials", "email"]), [
    ["url_credentials", "app:pa55"],
  ]);
});
