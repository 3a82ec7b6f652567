/**
 * Writes the labelled PII corpus, one JSON file per detector:
 * `tests/pii_corpus/<detector>.json` = `[{ text, expected }]`, where
 * `expected` holds the exact substrings the detector must report (`[]` for a
 * hard negative). Seeded, so a rerun gives the same files:
 *
 *     deno run -A tests/pii_corpus/generate.ts
 *
 * The rules (Luhn, SSA areas, NANP area codes) are restated here rather than
 * imported from the detectors, so the corpus checks them instead of echoing them.
 *
 * @module
 */
import { seededRandom } from "../../client/healthcare_source.ts";

/** One labelled string. */
export interface CorpusCase {
  text: string;
  expected: string[];
}

type Rng = () => number;

const POSITIVES = 300;
const NEGATIVES = 260;

function int(r: Rng, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

function pick<T>(r: Rng, items: readonly T[]): T {
  return items[Math.floor(r() * items.length)]!;
}

function digits(r: Rng, n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += String(int(r, 0, 9));
  return s;
}

function chars(r: Rng, n: number, alphabet: string): string {
  let s = "";
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(r() * alphabet.length)]!;
  return s;
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64URL = ALNUM + "-_";
const HEX = "0123456789abcdef";

function pad(n: number, width: number): string {
  return String(n).padStart(width, "0");
}

function timestamp(r: Rng): string {
  return `2024-${pad(int(r, 1, 12), 2)}-${pad(int(r, 1, 28), 2)}T${pad(int(r, 0, 23), 2)}:${pad(int(r, 0, 59), 2)}:${
    pad(int(r, 0, 59), 2)
  }.${pad(int(r, 0, 999), 3)}Z`;
}

function uuid(r: Rng): string {
  const h = chars(r, 32, HEX);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20)}`;
}

/** Log lines a positive is embedded in; `{}` is the value. Quotes and separators stay neutral. */
const FRAMES = [
  "{}",
  "Patient called from {} about refill",
  "note: {} (verified by front desk)",
  "[INFO] intake-svc updated record with {} after callback",
  "Dr. Alvarez reviewed chart; contact {} if symptoms worsen",
  "{} - left voicemail, will retry tomorrow",
  "lab portal message mentions {} in the free-text field",
  "pharmacy fax cover sheet listed {} twice",
  "WARN triage: caller gave {} and asked for a nurse",
  "escalated ticket; customer wrote: {} please fix",
];

function frame(r: Rng, value: string, prefixTimestamp = true): string {
  const line = pick(r, FRAMES).replace("{}", () => value);
  return prefixTimestamp && r() < 0.3 ? `${timestamp(r)} ${line}` : line;
}

/** Hard negatives that look numeric or structured but hold no personal data. */
function commonNegative(r: Rng): string {
  switch (int(r, 0, 15)) {
    case 0:
      return `order #${digits(r, 9)} shipped to pharmacy`;
    case 1:
      return `${timestamp(r)} INFO consultation_end duration_s=${int(r, 300, 2700)}`;
    case 2:
      return `client version v${int(r, 1, 12)}.${int(r, 0, 9)}.${int(r, 10000, 22000)} on Windows`;
    case 3:
      return `plugin ${int(r, 1, 9)}.${int(r, 0, 9)}.${int(r, 0, 9)}.${int(r, 0, 9)}.${int(r, 0, 9)} loaded`;
    case 4:
      return `request_id=${uuid(r)} status=200`;
    case 5:
      return `sha256=${chars(r, 64, HEX)} verified`;
    case 6:
      return `OID 1.3.6.1.4.1.${int(r, 300, 60000)}.${int(r, 1, 99)}.${int(r, 1, 9)} registered`;
    case 7:
      return `vitals heart_rate=${int(r, 55, 110)} systolic=${int(r, 100, 150)} spo2=${int(r, 90, 100)}`;
    case 8:
      return `lab HbA1c ${int(r, 4, 9)}.${int(r, 0, 9)}% collected ${timestamp(r)}`;
    case 9:
      return `took ${int(r, 1, 9999)} ms (p99 ${int(r, 100, 900)} ms)`;
    case 10:
      return `build ${int(r, 2019, 2025)}.${pad(int(r, 1, 12), 2)}.${pad(int(r, 1, 28), 2)}-${chars(r, 7, HEX)}`;
    case 11:
      return `session s-${chars(r, 8, HEX)} closed by dr-${pad(int(r, 1, 40), 4)}`;
    case 12:
      return `git commit ${chars(r, 40, HEX)} deployed`;
    case 13:
      return `prescription_issued amoxicillin ${pick(r, ["250", "500"])}mg refills=${int(r, 0, 3)}`;
    case 14:
      return `epoch_ms=${int(r, 1600000000, 1750000000)}${digits(r, 3)} seq=${int(r, 1, 99999)}`;
    default:
      return `GET /api/v2/patients/pt_k3f9a1c_${chars(r, 22, B64URL)} HTTP/1.1 200`;
  }
}

function build(
  seed: number,
  positive: (r: Rng, i: number) => CorpusCase,
  negative: (r: Rng, i: number) => string,
): CorpusCase[] {
  const r = seededRandom(seed);
  const out: CorpusCase[] = [];
  for (let i = 0; i < POSITIVES; i++) out.push(positive(r, i));
  for (let i = 0; i < NEGATIVES; i++) {
    out.push({ text: i % 3 === 0 ? commonNegative(r) : negative(r, i), expected: [] });
  }
  return out;
}

function one(r: Rng, value: string, text?: string): CorpusCase {
  return { text: text ?? frame(r, value), expected: [value] };
}

// ---------------------------------------------------------------- ssn

function ssnParts(r: Rng): [string, string, string] {
  let area = int(r, 1, 899);
  if (area === 666) area = 665;
  return [pad(area, 3), pad(int(r, 1, 99), 2), pad(int(r, 1, 9999), 4)];
}

const ssn = build(1, (r, i) => {
  const [a, g, s] = ssnParts(r);
  switch (i % 6) {
    case 0:
    case 1:
      return one(r, `${a}-${g}-${s}`);
    case 2:
      return one(r, `${a} ${g} ${s}`);
    case 3: {
      const v = a + g + s;
      return one(r, v, pick(r, [`SSN: ${v}`, `ssn=${v} on file`, `social security number ${v} provided`]));
    }
    case 4: {
      const v = `${a}-${g}-${s}`;
      return one(r, v, `patient SSN ${v}, insurance pending`);
    }
    default: {
      const [a2, g2, s2] = ssnParts(r);
      const v1 = `${a}-${g}-${s}`;
      const v2 = `${a2}-${g2}-${s2}`;
      return { text: `SSN corrected from ${v1} to ${v2}`, expected: [v1, v2] };
    }
  }
}, (r, i) => {
  const [, g, s] = ssnParts(r);
  switch (i % 10) {
    case 0:
      return `SSN 000-${g}-${s} rejected by validator`;
    case 1:
      return `SSN 666-${g}-${s} rejected by validator`;
    case 2:
      return `ITIN ${int(r, 900, 999)}-${g}-${s} recorded`;
    case 3:
      return `SSN ${pad(int(r, 1, 665), 3)}-00-${s} invalid group`;
    case 4:
      return `SSN ${pad(int(r, 1, 665), 3)}-${g}-0000 invalid serial`;
    case 5:
      return `order ${pad(int(r, 1, 899), 3)}${g}${s} processed`;
    case 6:
      return `call back ${int(r, 201, 989)}-${int(r, 200, 999)}-${digits(r, 4)}`;
    case 7:
      return `ZIP ${digits(r, 5)}-${digits(r, 4)}`;
    case 8:
      return `tracking ${pad(int(r, 1, 899), 3)}-${g}-${s}${int(r, 0, 9)} in transit`;
    default:
      return `ref ${digits(r, 3)}-${digits(r, 3)}-${digits(r, 3)} and batch ${digits(r, 12)}`;
  }
});

// ---------------------------------------------------------------- phone

function nanp(r: Rng): [string, string, string] {
  return [String(int(r, 200, 989)), pad(int(r, 0, 999), 3), digits(r, 4)];
}

const INTERNATIONAL = [
  (r: Rng) => `+44 20 ${digits(r, 4)} ${digits(r, 4)}`,
  (r: Rng) => `+49 30 ${digits(r, 8)}`,
  (r: Rng) => `+33 1 ${digits(r, 2)} ${digits(r, 2)} ${digits(r, 2)} ${digits(r, 2)}`,
  (r: Rng) => `+61 2 ${digits(r, 4)} ${digits(r, 4)}`,
  (r: Rng) => `+81 3-${digits(r, 4)}-${digits(r, 4)}`,
  (r: Rng) => `+91 ${int(r, 70000, 99999)} ${digits(r, 5)}`,
  (r: Rng) => `+353 1 ${digits(r, 3)} ${digits(r, 4)}`,
  (r: Rng) => `+4420${digits(r, 8)}`,
];

const phone = build(2, (r, i) => {
  const [a, e, x] = nanp(r);
  const forms = [
    `(${a}) ${e}-${x}`,
    `${a}-${e}-${x}`,
    `${a}.${e}.${x}`,
    `+1 ${a} ${e} ${x}`,
    `+1-${a}-${e}-${x}`,
    `1-${a}-${e}-${x}`,
    `+1${a}${e}${x}`,
    `+1 (${a}) ${e}-${x}`,
    `(${a})${e}-${x}`,
  ];
  if (i % 10 === 9) {
    const v1 = forms[0]!;
    const v2 = pick(r, INTERNATIONAL)(r);
    return { text: `home ${v1}, mobile ${v2}; prefers mobile`, expected: [v1, v2] };
  }
  const v = i % 3 === 2 ? pick(r, INTERNATIONAL)(r) : pick(r, forms);
  return one(r, v);
}, (r, i) => {
  switch (i % 12) {
    case 0:
      return `${timestamp(r).slice(0, 10)} ${pad(int(r, 0, 23), 2)}:${pad(int(r, 0, 59), 2)}:${pad(int(r, 0, 59), 2)}.${
        digits(r, 3)
      } sync done`;
    case 1:
      return `agent v${int(r, 10, 11)}.0.${int(r, 10000, 22000)}.${digits(r, 4)} running`;
    case 2:
      return `peer ${int(r, 100, 223)}.${int(r, 100, 255)}.${int(r, 100, 255)}.${int(r, 100, 255)} connected`;
    case 3:
      return `order ${int(r, 200, 989)}${digits(r, 7)} queued`;
    case 4:
      return `serial SN${int(r, 200, 989)}-${digits(r, 3)}-${digits(r, 4)} scanned`;
    case 5:
      return `area code ${int(r, 100, 199)}-${digits(r, 3)}-${digits(r, 4)} is not assignable`;
    case 6:
      return `part ${int(r, 200, 989)}-${digits(r, 3)}-${digits(r, 5)} out of stock`;
    case 7:
      return `temperature +${int(r, 36, 39)}.${int(r, 0, 9)} C, weight +${int(r, 1, 5)} kg`;
    case 8:
      return `asset ${uuid(r)} moved to ward ${int(r, 1, 12)}`;
    case 9:
      return `ext. ${digits(r, 4)} at desk ${int(r, 1, 40)}`;
    case 10:
      return `offset ${timestamp(r).slice(0, 19)}+0${int(r, 1, 9)}:00 applied`;
    default:
      return `invoice INV-${int(r, 200, 989)}-${digits(r, 3)}-${digits(r, 4)}-${digits(r, 2)}`;
  }
});

// ---------------------------------------------------------------- email

const FIRST = ["anna", "ben", "carla", "deepak", "elif", "farid", "grace", "hiro", "ines", "jonas", "kofi", "lena"];
const LAST = ["smith", "okafor", "nguyen", "garcia", "muller", "kowalski", "tanaka", "haddad", "silva", "ivanova"];
const DOMAINS = ["example.com", "clinic.org", "mail.example.co.uk", "health.example.net", "uni-hospital.de", "ehr.io"];

const email = build(3, (r, i) => {
  const local = [
    `${pick(r, FIRST)}.${pick(r, LAST)}`,
    `${pick(r, FIRST)}${int(r, 1, 99)}`,
    `${pick(r, FIRST)}_${pick(r, LAST)}+refill`,
    `${pick(r, FIRST)[0]}${pick(r, LAST)}`,
    `${pick(r, FIRST).toUpperCase()}.${pick(r, LAST)}`,
  ];
  const v = `${pick(r, local)}@${pick(r, DOMAINS)}`;
  if (i % 8 === 7) return one(r, v, `reply to <${v}> or via the portal`);
  if (i % 8 === 6) return one(r, v, `{"contact":"${v}","channel":"email"}`);
  return one(r, v);
}, (r, i) => {
  const who = pick(r, FIRST);
  switch (i % 10) {
    case 0:
      return `${who}@localhost rejected: no such domain`;
    case 1:
      return `ssh ${who}@jumphost failed`;
    case 2:
      return `delivered to root@${int(r, 1, 223)}.${int(r, 0, 255)}.${int(r, 0, 255)}.${int(r, 1, 254)}? no`;
    case 3:
      return `@${who}_md mentioned you in a note`;
    case 4:
      return `contact ${who} at example dot com`;
    case 5:
      return `invalid address ${who}@example.c`;
    case 6:
      return `typo ${who}@@example`;
    case 7:
      return `connect https://${who}:${chars(r, 10, ALNUM)}@db.example.com/ehr`;
    case 8:
      return `npm package @scope/${who}-utils@${int(r, 1, 9)}.${int(r, 0, 9)}.${int(r, 0, 9)} installed`;
    default:
      return `user ${who}@ clinic form left blank`;
  }
});

// ---------------------------------------------------------------- ipv4

function ipv4Address(r: Rng): string {
  return `${int(r, 1, 255)}.${int(r, 0, 255)}.${int(r, 0, 255)}.${int(r, 0, 255)}`;
}

const ipv4 = build(4, (r, i) => {
  const v = ipv4Address(r);
  switch (i % 6) {
    case 0:
      return one(r, v, `client ${v} connected`);
    case 1:
      return one(r, v, `upstream ${v}:${int(r, 1, 65535)} timed out`);
    case 2:
      return one(r, v, `X-Forwarded-For: [${v}]`);
    case 3:
      return one(r, v, `ip=${v} user-agent=okhttp`);
    case 4: {
      const w = ipv4Address(r);
      return { text: `proxy ${v} -> ${w}`, expected: [v, w] };
    }
    default:
      return one(r, v);
  }
}, (r, i) => {
  switch (i % 9) {
    case 0:
      return `version ${int(r, 1, 9)}.${int(r, 0, 9)}.${int(r, 0, 9)}.${int(r, 0, 9)}.${int(r, 0, 9)}`;
    case 1:
      return `client v${int(r, 1, 9)}.${int(r, 0, 9)}.${int(r, 0, 9)}.${int(r, 0, 99)} updated`;
    case 2:
      return `os 10.0.${int(r, 10000, 22000)}.${digits(r, 4)}`;
    case 3:
      return `bad address ${int(r, 256, 999)}.${int(r, 0, 255)}.${int(r, 0, 255)}.${int(r, 0, 255)}`;
    case 4:
      return `OID 1.3.6.1.4.1.${int(r, 1, 255)}.${int(r, 1, 255)}`;
    case 5:
      return `subnet ${int(r, 1, 223)}.${int(r, 0, 255)}.${int(r, 0, 255)} incomplete`;
    case 6:
      return `dose 1.${int(r, 0, 9)}.${int(r, 0, 9)} mg`;
    case 7:
      return `score ${int(r, 1, 9)}.${int(r, 0, 9)}/10 at ${int(r, 1, 12)}.${pad(int(r, 0, 59), 2)}`;
    default:
      return `range ${int(r, 1, 223)}.${int(r, 0, 255)}.${int(r, 0, 255)}.${int(r, 256, 999)} rejected`;
  }
});

// ---------------------------------------------------------------- ipv6

function hextet(r: Rng): string {
  return int(r, 0, 0xffff).toString(16);
}

function ipv6Address(r: Rng, i: number): string {
  const groups = Array.from({ length: 8 }, () => hextet(r));
  switch (i % 7) {
    case 0:
      return groups.map((g) => g.padStart(4, "0")).join(":");
    case 1:
      return `2001:db8::${hextet(r)}`;
    case 2:
      return `fe80::${groups.slice(0, 4).join(":")}`;
    case 3:
      return "::1";
    case 4:
      return `::ffff:${int(r, 1, 223)}.${int(r, 0, 255)}.${int(r, 0, 255)}.${int(r, 1, 254)}`;
    case 5:
      return `${groups.slice(0, 3).join(":")}::${groups.slice(5).join(":")}`.toUpperCase();
    default:
      return groups.join(":");
  }
}

const ipv6 = build(5, (r, i) => {
  const v = ipv6Address(r, i);
  switch (i % 5) {
    case 0:
      return one(r, v, `listening on [${v}]:${int(r, 1024, 65535)}`);
    case 1:
      return one(r, v, `client ${v} connected`);
    case 2:
      return one(r, v, `peer=${v}, rtt=${int(r, 1, 90)}ms`);
    default:
      return one(r, v);
  }
}, (r, i) => {
  switch (i % 10) {
    case 0:
      return `at ${pad(int(r, 0, 23), 2)}:${pad(int(r, 0, 59), 2)}:${pad(int(r, 0, 59), 2)} sync done`;
    case 1:
      return `elapsed ${pad(int(r, 0, 23), 2)}:${pad(int(r, 0, 59), 2)}:${pad(int(r, 0, 59), 2)}.${digits(r, 3)}`;
    case 2:
      return `mac ${Array.from({ length: 6 }, () => chars(r, 2, HEX)).join(":")} on eth0`;
    case 3:
      return `crash in std::vector<int>::at and Foo::Bar::${pick(r, ["run", "init", "close"])}`;
    case 4:
      return `tags dead:beef:${chars(r, 4, HEX)} set`;
    case 5:
      return `bad ${Array.from({ length: 9 }, () => hextet(r)).join(":")} (nine groups)`;
    case 6:
      return `bad 2001:db8:::${hextet(r)} (triple colon)`;
    case 7:
      return `aspect ${int(r, 1, 21)}:${int(r, 1, 9)} ratio`;
    case 8:
      return `bad 12345::${hextet(r)} group too long`;
    default:
      return `urn:ietf:params:oauth:grant-type:${pick(r, ["jwt-bearer", "device_code"])}`;
  }
});

// ---------------------------------------------------------------- card

function luhnCheckDigit(body: string): string {
  let sum = 0;
  for (let i = 0; i < body.length; i++) {
    let d = Number(body[body.length - 1 - i]);
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return String((10 - (sum % 10)) % 10);
}

function luhnOk(s: string): boolean {
  return luhnCheckDigit(s.slice(0, -1)) === s.slice(-1);
}

const BRANDS: readonly [string[], number[]][] = [
  [["4"], [16, 16, 13, 19]],
  [["51", "52", "53", "54", "55", "2221", "2500", "2720"], [16]],
  [["34", "37"], [15]],
  [["6011", "65", "644", "649"], [16, 19]],
  [["3528", "3589"], [16]],
  [["36", "300", "305", "38"], [14]],
  [["62"], [16]],
];

function cardNumber(r: Rng): string {
  const [prefixes, lengths] = pick(r, BRANDS);
  const prefix = pick(r, prefixes);
  const body = prefix + digits(r, pick(r, lengths) - prefix.length - 1);
  return body + luhnCheckDigit(body);
}

function groupCard(r: Rng, n: string): string {
  const style = int(r, 0, 2);
  if (style === 0) return n;
  const sep = style === 1 ? " " : "-";
  if (n.length === 15) return [n.slice(0, 4), n.slice(4, 10), n.slice(10)].join(sep);
  if (n.length === 14) return [n.slice(0, 4), n.slice(4, 10), n.slice(10)].join(sep);
  return n.match(/.{1,4}/g)!.join(sep);
}

const card = build(6, (r, i) => {
  const v = groupCard(r, cardNumber(r));
  switch (i % 5) {
    case 0:
      return one(r, v, `payment declined for card ${v} exp ${pad(int(r, 1, 12), 2)}/${int(r, 25, 31)}`);
    case 1:
      return one(r, v, `{"card":"${v}","amount":${int(r, 5, 500)}}`);
    case 2: {
      const w = groupCard(r, cardNumber(r));
      return { text: `replaced ${v} with ${w}`, expected: [v, w] };
    }
    default:
      return one(r, v);
  }
}, (r, i) => {
  switch (i % 8) {
    case 0:
    case 1: {
      let n = cardNumber(r);
      n = n.slice(0, -1) + String((Number(n.slice(-1)) + int(r, 1, 9)) % 10);
      return `card ${groupCard(r, n)} failed checksum`;
    }
    case 2: {
      const body = pick(r, ["9", "1", "7", "8", "0"]) + digits(r, 14);
      return `account ${body + luhnCheckDigit(body)} not a card`;
    }
    case 3: {
      let n: string;
      do n = digits(r, int(r, 13, 19)); while (luhnOk(n));
      return `batch ${n} exported`;
    }
    case 4:
      return `epoch_ms=${int(r, 1600000000, 1750000000)}${digits(r, 3)} sent`;
    case 5:
      return `card ending ${digits(r, 4)} charged, ${digits(r, 4)} ${digits(r, 4)} ${digits(r, 4)} partial`;
    case 6: {
      let n: string;
      do n = "4" + digits(r, 15); while (luhnOk(n));
      return `ref ${n.match(/.{4}/g)!.join(" ")} on hold`;
    }
    default:
      return `timestamp ${timestamp(r).replace(/\D/g, "")} appended`;
  }
});

// ---------------------------------------------------------------- mrn

const mrn = build(7, (r, i) => {
  const v = pick(r, [digits(r, int(r, 6, 10)), `A${digits(r, 7)}`, `MR-${digits(r, 8)}`.slice(0, 2) + digits(r, 6)]);
  const forms = [
    `MRN: ${v}`,
    `MRN#${v}`,
    `mrn=${v}`,
    `MRN ${v}`,
    `Medical record number ${v}`,
    `medical record no. ${v}`,
    `chart no. ${v}`,
    `"medical_record_number": "${v}"`,
    `MRN is ${v}`,
    `Chart #${v}`,
  ];
  return one(r, v, frame(r, forms[i % forms.length]!));
}, (r, i) => {
  switch (i % 8) {
    case 0:
      return `MRN: ${digits(r, int(r, 3, 5))} too short`;
    case 1:
      return `MRN ${digits(r, int(r, 11, 13))} too long`;
    case 2:
      return `MRN pending, registration at ${timestamp(r)}`;
    case 3:
      return `record ${digits(r, 7)} archived`;
    case 4:
      return `chart updated ${timestamp(r).slice(0, 10)} by dr-${pad(int(r, 1, 40), 4)}`;
    case 5:
      return `MRN not found for order ${digits(r, 8)}`;
    case 6:
      return `patient ${digits(r, 6)} checked in`;
    default:
      return `MRN ${digits(r, 7)}-${digits(r, 3)} malformed`;
  }
});

// ---------------------------------------------------------------- api_key

const UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

const api_key = build(8, (r, i) => {
  const keys = [
    () => `sk_live_${chars(r, int(r, 24, 40), ALNUM)}`,
    () => `sk_test_${chars(r, 24, ALNUM)}`,
    () => `pk_live_${chars(r, 24, ALNUM)}`,
    () => `AKIA${chars(r, 16, UPPER_DIGITS)}`,
    () => `ghp_${chars(r, 36, ALNUM)}`,
    () => `gho_${chars(r, 36, ALNUM)}`,
    () => `github_pat_${chars(r, 22, ALNUM)}_${chars(r, 59, ALNUM)}`,
    () => `xoxb-${digits(r, 12)}-${digits(r, 13)}-${chars(r, 24, ALNUM)}`,
    () => `xoxp-${digits(r, 12)}-${digits(r, 12)}-${digits(r, 13)}-${chars(r, 32, HEX)}`,
    () => `AIza${chars(r, 35, B64URL)}`,
  ];
  if (i % 3 === 2) {
    const v = chars(r, int(r, 16, 48), ALNUM);
    const forms = [`api_key=${v}`, `X-API-Key: ${v}`, `"apiKey": "${v}"`, `apikey=${v}&format=json`, `API-KEY: ${v}`];
    return one(r, v, frame(r, pick(r, forms)));
  }
  const v = keys[i % keys.length]!();
  return one(r, v, i % 4 === 0 ? `config loaded: api_key=${v}` : frame(r, v));
}, (r, i) => {
  switch (i % 10) {
    case 0:
      return `key sk_live_${chars(r, 8, ALNUM)} truncated`;
    case 1:
      return `AKIA${chars(r, 12, UPPER_DIGITS)} too short`;
    case 2:
      return `token ghp_${chars(r, 10, ALNUM)} invalid`;
    case 3:
      return `api_key= (empty)`;
    case 4:
      return `api_key: <redacted>`;
    case 5:
      return `api key rotated by admin at ${timestamp(r)}`;
    case 6:
      return `the api_key field is required`;
    case 7:
      return `api_key_id=${int(r, 1, 999)} revoked`;
    case 8:
      return `apikey=******** masked`;
    default:
      return `slack xoxb-${digits(r, 4)} short`;
  }
});

// ---------------------------------------------------------------- jwt

function b64url(text: string): string {
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function jwtToken(r: Rng): string {
  const alg = pick(r, ["HS256", "RS256", "ES256", "PS384"]);
  const header = r() < 0.5 ? { alg, typ: "JWT" } : { typ: "JWT", alg, kid: chars(r, 8, HEX) };
  const payload = { sub: `pt_${chars(r, 10, ALNUM)}`, iat: int(r, 1600000000, 1750000000), scope: "ehr.read" };
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}.${chars(r, 43, B64URL)}`;
}

const jwt = build(9, (r, i) => {
  if (i % 10 === 9) {
    const v = `${b64url('{"alg":"none"}')}.${b64url(`{"sub":"${chars(r, 6, ALNUM)}"}`)}.`;
    return one(r, v, `unsigned token ${v} rejected`);
  }
  const v = jwtToken(r);
  return one(r, v, pick(r, [`token=${v}`, `id_token: ${v}`, `cookie session=${v}; Path=/`, frame(r, v)]));
}, (r, i) => {
  switch (i % 6) {
    case 0:
      return `token ${b64url('{"typ":"JWT"}')}.${b64url('{"sub":"x"}')}.${chars(r, 20, B64URL)} lacks alg`;
    case 1:
      return `blob eyJ${chars(r, 20, ALNUM)}.${chars(r, 20, ALNUM)}.${chars(r, 20, ALNUM)} not json`;
    case 2:
      return `partial ${b64url('{"alg":"HS256"}')}.${b64url('{"sub":"y"}')}.`;
    case 3:
      return `package com.example.${pick(r, ["ehr", "portal"])}.${pick(r, ["auth", "sync"])} loaded`;
    case 4:
      return `host api.v${int(r, 1, 3)}.example.com resolved`;
    default:
      return `archive backup.${int(r, 1, 99)}.tar.gz uploaded`;
  }
});

// ---------------------------------------------------------------- bearer

const bearer = build(10, (r, i) => {
  const v = i % 4 === 3 ? jwtToken(r) : chars(r, int(r, 20, 64), B64URL);
  const forms = [
    `Authorization: Bearer ${v}`,
    `authorization: bearer ${v}`,
    `headers={"Authorization":"Bearer ${v}"}`,
    `sent Bearer ${v} to upstream`,
    `Authorization=Bearer ${v}`,
  ];
  const form = forms[i % forms.length]!;
  if (form.startsWith("sent") && !/\d/.test(v)) return one(r, v, `Authorization: Bearer ${v}`);
  return one(r, v, frame(r, form, false));
}, (r, i) => {
  switch (i % 7) {
    case 0:
      return `Bearer authentication failed for user ${pick(r, FIRST)}`;
    case 1:
      return `bearer token expired at ${timestamp(r)}`;
    case 2:
      return `Authorization: Basic ${btoa(`${pick(r, FIRST)}:x`)}`;
    case 3:
      return `Authorization: Bearer`;
    case 4:
      return `Authorization: Bearer <redacted>`;
    case 5:
      return `the bearer of this card is ${pick(r, FIRST)}`;
    default:
      return `scheme=Bearer realm="ehr" error="invalid_token"`;
  }
});

// ---------------------------------------------------------------- password

const PW_ALPHABET = ALNUM + "!@#$%^*()-_+.~";

const password = build(11, (r, i) => {
  const v = chars(r, int(r, 6, 24), PW_ALPHABET);
  const q = chars(r, int(r, 4, 10), ALNUM) + " " + chars(r, int(r, 4, 10), ALNUM);
  const forms: [string, string][] = [
    [`password=${v}`, v],
    [`passwd: ${v}`, v],
    [`"password":"${v}"`, v],
    [`pwd=${v}`, v],
    [`secret=${v}`, v],
    [`client_secret=${v}&grant_type=client_credentials`, v],
    [`DB_PASSWORD=${v}`, v],
    [`db.password: ${v}`, v],
    [`"password": "${q}"`, q],
    [`userPassword='${v}'`, v],
    [`{"user":"${pick(r, FIRST)}","pwd":"${v}"}`, v],
    [`secret_key => ${v}`, v],
  ];
  const [text, value] = forms[i % forms.length]!;
  return one(r, value, frame(r, text));
}, (r, i) => {
  switch (i % 10) {
    case 0:
      return `password reset requested by ${pick(r, FIRST)}`;
    case 1:
      return `password_reset=true for user ${int(r, 1, 999)}`;
    case 2:
      return `password= (empty)`;
    case 3:
      return `password: ********`;
    case 4:
      return `invalid password for user ${pick(r, FIRST)}`;
    case 5:
      return `password_expires_in_days=${int(r, 30, 180)}`;
    case 6:
      return `secret_rotation_days=${int(r, 30, 365)}`;
    case 7:
      return `passwordless login enabled`;
    case 8:
      return `password=[REDACTED:PASSWORD] user=${pick(r, FIRST)}`;
    default:
      return `"password": null, "mfa": true`;
  }
});

// ---------------------------------------------------------------- url_credentials

const url_credentials = build(12, (r, i) => {
  const user = pick(r, [pick(r, FIRST), "admin", "svc_ehr", "guest"]);
  const pass = chars(r, int(r, 6, 20), ALNUM + "!$%-_.~");
  const forms: [string, string][] = [
    [`postgres://${user}:${pass}@db.internal:5432/ehr`, `${user}:${pass}`],
    [`https://${user}:${pass}@example.com/api`, `${user}:${pass}`],
    [`amqp://${user}:${pass}@rabbit:5672/`, `${user}:${pass}`],
    [`redis://:${pass}@cache.internal:6379`, `:${pass}`],
    [`mongodb+srv://${user}:${pass}@cluster0.example.net/db`, `${user}:${pass}`],
    [`ftp://${user}:${pass}@10.0.0.${int(r, 1, 254)}/upload`, `${user}:${pass}`],
  ];
  const [url, value] = forms[i % forms.length]!;
  return one(r, value, frame(r, pick(r, [`connecting to ${url}`, `DATABASE_URL=${url}`, url])));
}, (r, i) => {
  switch (i % 8) {
    case 0:
      return `fetch https://example.com:${int(r, 1024, 65535)}/path ok`;
    case 1:
      return `clone https://${pick(r, FIRST)}@example.com/repo.git`;
    case 2:
      return `mailto:${pick(r, FIRST)}@example.com`;
    case 3:
      return `ssh git@github.com:org/repo.git`;
    case 4:
      return `profile http://example.com/@${pick(r, FIRST)}`;
    case 5:
      return `ftp://ftp.example.com/pub/file-${int(r, 1, 99)}.txt`;
    case 6:
      return `https://example.com/login?next=/a:b@c`;
    default:
      return `proxy http://proxy.internal:${int(r, 3000, 9000)} used`;
  }
});

// ---------------------------------------------------------------- dob

const MONTH_NAMES = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];

const dob = build(13, (r, i) => {
  const y = int(r, 1925, 2023);
  const m = int(r, 1, 12);
  const d = int(r, 1, 28);
  const month = MONTH_NAMES[m - 1]!;
  const dates = [
    `${y}-${pad(m, 2)}-${pad(d, 2)}`,
    `${m}/${d}/${y}`,
    `${pad(m, 2)}/${pad(d, 2)}/${y}`,
    `${d} ${month} ${y}`,
    `${d} ${month.slice(0, 3)} ${y}`,
    `${month} ${d}, ${y}`,
  ];
  const v = pick(r, dates);
  const forms = [
    `DOB: ${v}`,
    `dob=${v}`,
    `"dob":"${v}"`,
    `date of birth: ${v}`,
    `Date of Birth - ${v}`,
    `born on ${v}`,
    `born ${v}`,
    `birthdate ${v}`,
    `D.O.B. ${v}`,
    `DOB is ${v}`,
  ];
  return one(r, v, frame(r, forms[i % forms.length]!));
}, (r, i) => {
  switch (i % 10) {
    case 0:
      return `visit on ${timestamp(r).slice(0, 10)} confirmed`;
    case 1:
      return `created_at=${timestamp(r)}`;
    case 2:
      return `appointment ${int(r, 1, 12)}/${int(r, 1, 28)}/2025 at 10am`;
    case 3:
      return `DOB: unknown`;
    case 4:
      return `DOB not provided; admitted ${timestamp(r).slice(0, 10)}`;
    case 5:
      return `DOB updated at ${timestamp(r)}`;
    case 6:
      return `DOB ${int(r, 13, 19)}/${int(r, 32, 45)}/1980 rejected`;
    case 7:
      return `born ${int(r, 2, 9)} weeks premature`;
    case 8:
      return `birthday party ${timestamp(r).slice(0, 10)} cancelled`;
    default:
      return `lab drawn ${int(r, 1, 28)} ${pick(r, MONTH_NAMES)} 2024 09:30`;
  }
});

/** The corpus, by detector name. */
export const CORPUS: Readonly<Record<string, CorpusCase[]>> = {
  ssn,
  phone,
  email,
  ipv4,
  ipv6,
  card,
  mrn,
  api_key,
  bearer,
  jwt,
  password,
  url_credentials,
  dob,
};

if (import.meta.main) {
  const dir = new URL(".", import.meta.url);
  for (const [name, cases] of Object.entries(CORPUS)) {
    await Deno.writeTextFile(new URL(`${name}.json`, dir), JSON.stringify(cases, null, 2) + "\n");
    console.log(`${name}.json: ${cases.length} cases`);
  }
}
