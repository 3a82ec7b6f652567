/**
 * Detectors for personal data and secrets in free text: SSNs, phone numbers,
 * e-mail and IP addresses, payment cards, medical record numbers, API keys,
 * bearer tokens, JWTs, passwords, credentials in URLs and dates of birth.
 *
 * Every detector makes one pass over the text with a precompiled global
 * regex and checks each candidate in code (Luhn, SSA rules, JWT header), so a
 * pattern stays simple enough not to backtrack badly; cheap pre-checks skip a
 * pass when the text cannot hold a match.
 *
 * @module
 */

/** One detected span: `[start, end)` as UTF-16 offsets into the scanned text. */
export interface PiiMatch {
  start: number;
  end: number;
  /** The {@linkcode Detector.name} that found it. */
  detector: string;
}

/** Finds one kind of personal data or secret. */
export interface Detector {
  /** Stable id used in policies, e.g. `"ssn"`. */
  name: string;
  /** Used in replacements such as `[REDACTED:SSN]`. */
  label: string;
  /** Non-overlapping matches in `text`, sorted by start. */
  find(text: string): PiiMatch[];
}

/** Raised for a detector name that is not built in. */
export class UnknownDetectorError extends Error {
  override name = "UnknownDetectorError";
}

/** Raised for a custom pattern that does not compile or matches the empty string. */
export class InvalidPatternError extends Error {
  override name = "InvalidPatternError";
}

type Accept = (m: RegExpExecArray, text: string) => [number, number] | null;

/** Runs `re` over `text` once; `accept` turns a raw match into a span, or rejects it. */
function scan(text: string, re: RegExp, name: string, accept: Accept): PiiMatch[] {
  const out: PiiMatch[] = [];
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    const span = accept(m, text);
    if (span !== null) out.push({ start: span[0], end: span[1], detector: name });
  }
  return out;
}

/**
 * Runs sticky `re` from the left end of each run of `isRunChar` characters
 * that reaches an occurrence of `anchor`: far cheaper than letting the regex
 * try every position when the anchor ("@", ":") is rare.
 */
function scanAround(
  text: string,
  anchor: string,
  isRunChar: (c: number) => boolean,
  re: RegExp,
  name: string,
  accept: Accept,
): PiiMatch[] {
  const out: PiiMatch[] = [];
  let from = 0;
  let at = text.indexOf(anchor);
  while (at >= 0) {
    let start = at;
    while (start > from && isRunChar(text.charCodeAt(start - 1))) start--;
    re.lastIndex = start;
    const m = re.exec(text);
    let next = at + 1;
    if (m !== null) {
      const span = accept(m, text);
      if (span !== null) {
        out.push({ start: span[0], end: span[1], detector: name });
        from = span[1];
        next = Math.max(next, span[1]);
      }
    }
    at = text.indexOf(anchor, next);
  }
  return out;
}

function isAlnumCode(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

function isEmailLocalCode(c: number): boolean {
  return isAlnumCode(c) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45;
}

function isHexOrColonCode(c: number): boolean {
  return (c >= 48 && c <= 58) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

/** Span of the match's last non-empty group when that group ends the match (a keyword-then-value pattern). */
function trailingValue(m: RegExpExecArray): [number, number] {
  const end = m.index + m[0].length;
  for (let g = m.length - 1; g > 0; g--) {
    const v = m[g];
    if (v !== undefined && v.length > 0) return [end - v.length, end];
  }
  return [m.index, end];
}

const EMPTY_PROBES = ["", " ", "a", "A", "0", "_", "-", ".", "\n", "a b", "ab12 CD-34."];

// ---------------------------------------------------------------- ssn

const SSN_RE =
  /(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])|\b(?:ssn|ss#|social security(?:\s+(?:number|no\.?|#))?)(?![a-z])[\s:#="'-]{0,4}(?:is\s+)?(\d{9})(?!\w)/gi;

/** True when `area`, `group` and `serial` obey the SSA rules (no 000/666/9xx area, 00 group, 0000 serial). */
function isValidSsnParts(area: string, group: string, serial: string): boolean {
  return area !== "000" && area !== "666" && area[0] !== "9" && group !== "00" && serial !== "0000";
}

const ssn: Detector = {
  name: "ssn",
  label: "SSN",
  find(text) {
    return scan(text, SSN_RE, "ssn", (m) => {
      if (m[1] !== undefined) {
        return isValidSsnParts(m[1], m[3]!, m[4]!) ? [m.index, m.index + m[0].length] : null;
      }
      const d = m[5]!;
      return isValidSsnParts(d.slice(0, 3), d.slice(3, 5), d.slice(5)) ? trailingValue(m) : null;
    });
  },
};

// ---------------------------------------------------------------- phone

const PHONE_RE =
  /(?<![\w.+/-])(?:(?:\+1[ .-]?|1[ .-])?(?:\(([2-9]\d\d)\)[ .-]?|([2-9]\d\d)[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)|\+[1-9](?:[ -]?\d){7,14}(?![\w-]|\.\d))/g;

const phone: Detector = {
  name: "phone",
  label: "PHONE",
  find(text) {
    return scan(text, PHONE_RE, "phone", (m) => [m.index, m.index + m[0].length]);
  },
};

// ---------------------------------------------------------------- email

const EMAIL_RE =
  /(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w@-]|\.[A-Za-z0-9])/y;

const email: Detector = {
  name: "email",
  label: "EMAIL",
  find(text) {
    if (!text.includes("@")) return [];
    return scanAround(text, "@", isEmailLocalCode, EMAIL_RE, "email", (m, t) => {
      // "scheme://user:pass@host" is a credential, not an address: leave it to url_credentials.
      if (t.charCodeAt(m.index - 1) === 58 && /:\/\/[^\s/@]*$/.test(t.slice(Math.max(0, m.index - 200), m.index))) {
        return null;
      }
      if (m[0].includes("..")) return null;
      return [m.index, m.index + m[0].length];
    });
  },
};

// ---------------------------------------------------------------- ipv4

const OCTET = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const IPV4_RE = new RegExp(`(?<![\\w.])${OCTET}(?:\\.${OCTET}){3}(?!\\w|\\.\\d)`, "g");
const IPV4_EXACT = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);

const ipv4: Detector = {
  name: "ipv4",
  label: "IPV4",
  find(text) {
    return scan(text, IPV4_RE, "ipv4", (m) => [m.index, m.index + m[0].length]);
  },
};

// ---------------------------------------------------------------- ipv6

const IPV6_RE = /(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}/y;
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;

function hexGroups(part: string): number {
  if (part === "") return 0;
  const groups = part.split(":");
  for (const g of groups) if (!HEX_GROUP.test(g)) return -1;
  return groups.length;
}

/** True for a complete IPv6 address: eight groups, one `::` run, or an IPv4 tail. */
export function isIpv6(address: string): boolean {
  let s = address;
  const lastColon = s.lastIndexOf(":");
  if (lastColon < 0) return false;
  const tail = s.slice(lastColon + 1);
  if (tail.includes(".")) {
    if (!IPV4_EXACT.test(tail)) return false;
    s = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = s.split("::");
  if (halves.length > 2) return false;
  if (halves.length === 1) return hexGroups(s) === 8;
  const left = hexGroups(halves[0]!);
  const right = hexGroups(halves[1]!);
  return left >= 0 && right >= 0 && left + right <= 7;
}

const ipv6: Detector = {
  name: "ipv6",
  label: "IPV6",
  find(text) {
    return scanAround(text, ":", isHexOrColonCode, IPV6_RE, "ipv6", (m, t) => {
      let s = m[0];
      const next = t.charCodeAt(m.index + s.length);
      // A ninth group, or a word running on, is not an address.
      if (
        next === 58 || (next >= 48 && next <= 57) || (next >= 65 && next <= 90) || (next >= 97 && next <= 122) ||
        next === 95
      ) {
        return null;
      }
      // A sentence may put a colon right after an address: "from 2001:db8::1: refused".
      if (s.endsWith(":") && !s.endsWith("::")) s = s.slice(0, -1);
      return isIpv6(s) ? [m.index, m.index + s.length] : null;
    });
  },
};

// ---------------------------------------------------------------- card

/** True when `digits` passes the Luhn (mod 10) check used by payment card numbers. */
export function isLuhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/** True when the prefix (IIN) and length belong to a major card brand. */
function isCardIin(d: string): boolean {
  const n = d.length;
  const p2 = Number(d.slice(0, 2));
  const p3 = Number(d.slice(0, 3));
  const p4 = Number(d.slice(0, 4));
  if (d[0] === "4") return n === 13 || n === 16 || n === 19; // Visa
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n === 16; // Mastercard
  if (p2 === 34 || p2 === 37) return n === 15; // American Express
  if (p4 === 6011 || p2 === 65 || (p3 >= 644 && p3 <= 649)) return n >= 16 && n <= 19; // Discover
  if (p2 === 62) return n >= 16 && n <= 19; // UnionPay
  if (p4 >= 3528 && p4 <= 3589) return n >= 16 && n <= 19; // JCB
  if ((p3 >= 300 && p3 <= 305) || p2 === 36 || p2 === 38 || p2 === 39) return n >= 14 && n <= 19; // Diners
  return false;
}

/** Groups a card is written in: one run, fours with a shorter last group, or Amex/Diners 4-6-5 and 4-6-4. */
function isCardGrouping(lengths: readonly number[]): boolean {
  if (lengths.length === 1) return true;
  if (lengths.length === 3 && lengths[0] === 4 && lengths[1] === 6 && (lengths[2] === 5 || lengths[2] === 4)) {
    return true;
  }
  for (let i = 0; i < lengths.length - 1; i++) if (lengths[i] !== 4) return false;
  return lengths[lengths.length - 1]! <= 4;
}

const CARD_RE = /(?<![\w.-])\d(?:[ -]?\d){12,}(?![\w.])/g;
const CARD_GROUP_RE = /\d+/g;

const card: Detector = {
  name: "card",
  label: "CARD",
  find(text) {
    const out: PiiMatch[] = [];
    CARD_RE.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = CARD_RE.exec(text)) !== null) {
      const starts: number[] = [];
      const groups: string[] = [];
      CARD_GROUP_RE.lastIndex = 0;
      let g: RegExpExecArray | null;
      while ((g = CARD_GROUP_RE.exec(m[0])) !== null) {
        starts.push(g.index);
        groups.push(g[0]);
      }
      for (let i = 0; i < groups.length;) {
        let taken = 0;
        for (let j = groups.length; j > i; j--) {
          const run = groups.slice(i, j);
          const d = run.join("");
          if (d.length < 13 || d.length > 19) continue;
          if (isCardGrouping(run.map((x) => x.length)) && isCardIin(d) && isLuhnValid(d)) {
            const start = m.index + starts[i]!;
            out.push({ start, end: m.index + starts[j - 1]! + groups[j - 1]!.length, detector: "card" });
            taken = j - i;
            break;
          }
        }
        i += taken > 0 ? taken : 1;
      }
    }
    return out;
  },
};

// ---------------------------------------------------------------- mrn

/**
 * Default pattern for medical record numbers: a labelled context ("MRN",
 * "medical record number", "chart no.") then 6-10 digits, optionally after up
 * to three letters. Only the `value` group is reported, so redaction keeps the label.
 */
export const DEFAULT_MRN_PATTERN =
  "\\b(?:mrn|medical[ _-]?record(?:[ _-]?(?:number|num|no\\.?|#))?|chart[ _-]?(?:number|num|no\\.?|#))(?:(?<=#)|(?![a-z]))" +
  "[\\s:#=\"'-]{0,4}(?:is\\s+)?(?<value>[a-z]{0,3}-?\\d{6,10})(?![\\w-])";

/**
 * A medical record number detector (name `mrn`, label `MRN`) for `pattern`,
 * matched case-insensitively; see {@linkcode createRegexDetector} for the
 * `value` group.
 *
 * @throws {InvalidPatternError} when the pattern does not compile or matches the empty string
 */
export function createMrnDetector(pattern: string = DEFAULT_MRN_PATTERN): Detector {
  if (pattern !== DEFAULT_MRN_PATTERN) return createRegexDetector("mrn", "MRN", pattern, "i");
  // The default ends with its value group, so the span comes from lengths, without the costly `d` flag.
  const re = new RegExp(DEFAULT_MRN_PATTERN, "gi");
  return {
    name: "mrn",
    label: "MRN",
    find(text) {
      return scan(text, re, "mrn", (m) => {
        const end = m.index + m[0].length;
        return [end - m.groups!.value!.length, end];
      });
    },
  };
}

// ---------------------------------------------------------------- api_key

const API_KEY_RE = new RegExp(
  [
    // Generic "api_key: value" first, so a known-format key after it is reported once.
    "\\b[Aa][Pp][Ii][_ -]?[Kk][Ee][Yy](?![A-Za-z])[\"']?\\s*[:=]\\s*[\"']?([A-Za-z0-9_\\-.+/]{8,}=*)",
    "\\b(?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{16,99}(?![\\w-])",
    "\\b(?:AKIA|ASIA)[0-9A-Z]{16}(?![\\w-])",
    "\\bgh[pousr]_[A-Za-z0-9]{36,255}(?![\\w-])",
    "\\bgithub_pat_[A-Za-z0-9_]{22,255}(?![\\w-])",
    "\\bxox[baprs]-[A-Za-z0-9-]{10,200}(?![\\w-])",
    "\\bAIza[0-9A-Za-z_-]{35}(?![\\w-])",
  ].join("|"),
  "g",
);

const api_key: Detector = {
  name: "api_key",
  label: "API_KEY",
  find(text) {
    return scan(text, API_KEY_RE, "api_key", (m) => {
      if (m[1] === undefined) return [m.index, m.index + m[0].length];
      // Placeholders are not keys.
      if (/^(?:x+|\*+|null|none|undefined|redacted|changeme|your[_-]?api[_-]?key)$/i.test(m[1])) return null;
      return trailingValue(m);
    });
  },
};

// ---------------------------------------------------------------- bearer

const BEARER_RE =
  /(\bauthorization["']?\s*[:=]\s*["']?)?\bbearer\s+([A-Za-z0-9\-._~+/]{8,}=*)(?![A-Za-z0-9\-._~+/=])/gi;

const bearer: Detector = {
  name: "bearer",
  label: "BEARER",
  find(text) {
    return scan(text, BEARER_RE, "bearer", (m) => {
      const token = m[2]!;
      // Without the header name, demand a token-looking value so prose ("bearer authentication") is left alone.
      if (m[1] === undefined && (token.length < 16 || !/\d/.test(token))) return null;
      return trailingValue(m);
    });
  },
};

// ---------------------------------------------------------------- jwt

const JWT_RE = /(?<![\w.-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?![\w.-])/g;

/** True when `segment` is base64url of a JSON object with a string `alg`; unsigned tokens must say `"none"`. */
function isJwtHeader(segment: string, signed: boolean): boolean {
  try {
    const b64 = segment.replace(/-/g, "+").replace(/_/g, "/");
    const header: unknown = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4)));
    if (typeof header !== "object" || header === null) return false;
    const alg = (header as { alg?: unknown }).alg;
    return typeof alg === "string" && (signed || alg.toLowerCase() === "none");
  } catch {
    return false;
  }
}

const jwt: Detector = {
  name: "jwt",
  label: "JWT",
  find(text) {
    return scan(text, JWT_RE, "jwt", (m) => {
      const token = m[0];
      return isJwtHeader(token.slice(0, token.indexOf(".")), !token.endsWith("."))
        ? [m.index, m.index + m[0].length]
        : null;
    });
  },
};

// ---------------------------------------------------------------- password

const PASSWORD_RE =
  /(?:password|passwd|passphrase|pwd|secret)(?:[_-]?key)?["']?\s*(?:=>|[:=])\s*(?:"([^"\n]+)(?=")|'([^'\n]+)(?=')|([^\s"',;&}\]]+))/gi;
const PLACEHOLDER_RE = /^(?:\*+|x+|•+|\[redacted[^\]]*\]?|<\w+>|\(\w+\)|null|none|undefined|true|false)$/i;

const password: Detector = {
  name: "password",
  label: "PASSWORD",
  find(text) {
    return scan(text, PASSWORD_RE, "password", (m) => {
      const value = m[1] ?? m[2] ?? m[3]!;
      if (PLACEHOLDER_RE.test(value)) return null;
      return trailingValue(m);
    });
  },
};

// ---------------------------------------------------------------- url_credentials

const URL_CREDENTIALS_RE = /\b[a-z][a-z0-9+.-]*:\/\/([^\s:/?#@]*:[^\s/?#@]+)@(?=[\w[])/gi;

const url_credentials: Detector = {
  name: "url_credentials",
  label: "URL_CREDENTIALS",
  find(text) {
    if (!text.includes("://")) return [];
    return scan(text, URL_CREDENTIALS_RE, "url_credentials", (m) => {
      const end = m.index + m[0].length - 1;
      return [end - m[1]!.length, end];
    });
  },
};

// ---------------------------------------------------------------- dob

const MONTHS = "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?" +
  "|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?";
const DOB_RE = new RegExp(
  "\\b(?:dob|d\\.o\\.b\\.?|date[ _-]of[ _-]birth|birth[ _-]?date|birthday|born(?: on)?)(?![a-z])" +
    "[\\s:=#\"'()-]{0,5}(?:(?:is|was|on)\\s+)?" +
    `(\\d{4}-\\d{2}-\\d{2}|\\d{1,2}/\\d{1,2}/\\d{4}|\\d{1,2}(?:st|nd|rd|th)?\\s(?:${MONTHS})\\.?,?\\s\\d{4}` +
    `|(?:${MONTHS})\\.?\\s\\d{1,2}(?:st|nd|rd|th)?,?\\s\\d{4})(?![\\w/-])`,
  "gi",
);
const MONTH_INDEX: Record<string, number> = {
  jan: 1,
  feb: 2,
  mar: 3,
  apr: 4,
  may: 5,
  jun: 6,
  jul: 7,
  aug: 8,
  sep: 9,
  oct: 10,
  nov: 11,
  dec: 12,
};

/** Year, month and day of a date in one of the DOB forms, or null. */
function dateParts(s: string): [number, number, number] | null {
  let r: RegExpExecArray | null;
  if ((r = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s))) return [+r[1]!, +r[2]!, +r[3]!];
  if ((r = /^(\d{1,2})\/(\d{1,2})\/(\d{4})$/.exec(s))) return [+r[3]!, +r[1]!, +r[2]!];
  if ((r = /^(\d{1,2})\D*\s([a-z]{3})[a-z]*\.?,?\s(\d{4})$/i.exec(s))) {
    return [+r[3]!, MONTH_INDEX[r[2]!.toLowerCase()] ?? 0, +r[1]!];
  }
  if ((r = /^([a-z]{3})[a-z]*\.?\s(\d{1,2})\D*,?\s(\d{4})$/i.exec(s))) {
    return [+r[3]!, MONTH_INDEX[r[1]!.toLowerCase()] ?? 0, +r[2]!];
  }
  return null;
}

const dob: Detector = {
  name: "dob",
  label: "DOB",
  find(text) {
    return scan(text, DOB_RE, "dob", (m, t) => {
      const end = m.index + m[0].length;
      // A date with a time after it is a timestamp, whatever word came before.
      if (/^(?:T\d|\s\d{1,2}:\d{2})/.test(t.slice(end, end + 6))) return null;
      const p = dateParts(m[1]!);
      if (p === null) return null;
      const [y, mo, d] = p;
      if (y < 1880 || y > 2099 || mo < 1 || mo > 12 || d < 1 || d > 31) return null;
      return trailingValue(m);
    });
  },
};

// ---------------------------------------------------------------- registry

/** Every built-in detector, by name. */
export const DETECTORS: Readonly<Record<string, Detector>> = Object.freeze({
  ssn,
  phone,
  email,
  ipv4,
  ipv6,
  card,
  mrn: createMrnDetector(),
  api_key,
  bearer,
  jwt,
  password,
  url_credentials,
  dob,
});

/** The names of every built-in detector. */
export const DETECTOR_NAMES: readonly string[] = Object.freeze(Object.keys(DETECTORS));

/**
 * The built-in detectors for `names`, in that order.
 *
 * @throws {UnknownDetectorError} for a name that is not built in
 */
export function getDetectors(names: readonly string[]): Detector[] {
  return names.map((n) => {
    const d = Object.hasOwn(DETECTORS, n) ? DETECTORS[n] : undefined;
    if (d === undefined) {
      throw new UnknownDetectorError(`unknown detector ${JSON.stringify(n)}; known: ${DETECTOR_NAMES.join(", ")}`);
    }
    return d;
  });
}

/**
 * A detector for a custom regular expression. When the pattern has a named
 * group `value`, only that group is reported (so `token=(?<value>\w+)` keeps
 * `token=`); otherwise the whole match is.
 *
 * @example
 * ```ts
 * const d = createRegexDetector("ticket", "TICKET", "TCK-\\d{6}");
 * d.find("see TCK-123456"); // [{ start: 4, end: 14, detector: "ticket" }]
 * ```
 *
 * @throws {InvalidPatternError} when the pattern does not compile, or can match the empty string
 */
export function createRegexDetector(name: string, label: string, pattern: string, flags = ""): Detector {
  const valueGroup = pattern.includes("(?<value>");
  const base = [...new Set(flags.replace(/[gyd]/g, ""))].join("");
  let re: RegExp;
  let withIndices: RegExp;
  try {
    re = new RegExp(pattern, base + "g");
    // Match indices cost several times a plain match: ask for them only where a match was found.
    withIndices = new RegExp(pattern, base + "yd");
  } catch (e: unknown) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new InvalidPatternError(`pattern ${JSON.stringify(pattern)} for detector "${name}" is invalid: ${reason}`);
  }
  for (const probe of EMPTY_PROBES) {
    for (const m of probe.matchAll(re)) {
      const v = valueGroup ? m.groups?.value : m[0];
      if (v === undefined || v.length === 0) {
        throw new InvalidPatternError(
          `pattern ${JSON.stringify(pattern)} for detector "${name}" matches the empty string`,
        );
      }
    }
  }
  return {
    name,
    label,
    find(text) {
      return scan(text, re, name, (m) => {
        if (!valueGroup) return [m.index, m.index + m[0].length];
        if (!m.groups?.value) return null;
        withIndices.lastIndex = m.index;
        const span = withIndices.exec(text)?.indices?.groups?.value;
        return span === undefined || span[0] === span[1] ? null : [span[0], span[1]];
      });
    },
  };
}

/**
 * Non-overlapping matches of all `detectors` in `text`, sorted by start. When
 * matches overlap, the longer one wins; at equal length, the detector earlier
 * in the list wins.
 */
export function findPii(text: string, detectors: readonly Detector[]): PiiMatch[] {
  const all: PiiMatch[] = [];
  const rank: number[] = [];
  for (let i = 0; i < detectors.length; i++) {
    for (const m of detectors[i]!.find(text)) {
      all.push(m);
      rank.push(i);
    }
  }
  if (all.length <= 1) return all;
  const order = all.map((_, i) => i).sort((a, b) => {
    const x = all[a]!;
    const y = all[b]!;
    return (y.end - y.start) - (x.end - x.start) || rank[a]! - rank[b]! || x.start - y.start;
  });
  const kept: PiiMatch[] = [];
  for (const i of order) {
    const m = all[i]!;
    if (kept.every((k) => m.end <= k.start || m.start >= k.end)) kept.push(m);
  }
  return kept.sort((a, b) => a.start - b.start);
}

/**
 * Replaces every match of `detectors` in `text` with `replace(match, matchedText)`.
 * The returned matches hold offsets into the original text.
 *
 * @example
 * ```ts
 * redactText("ssn 123-45-6789", getDetectors(["ssn"]), (m) => `[REDACTED:${m.detector}]`);
 * // { text: "ssn [REDACTED:ssn]", matches: [{ start: 4, end: 15, detector: "ssn" }] }
 * ```
 */
export function redactText(
  text: string,
  detectors: readonly Detector[],
  replace: (m: PiiMatch, original: string) => string,
): { text: string; matches: PiiMatch[] } {
  const matches = findPii(text, detectors);
  if (matches.length === 0) return { text, matches };
  let out = "";
  let at = 0;
  for (const m of matches) {
    out += text.slice(at, m.start) + replace(m, text.slice(m.start, m.end));
    at = m.end;
  }
  return { text: out + text.slice(at), matches };
}
