/**
 * Privacy policies: which fields of a log entry are pseudonymised, dropped or
 * FF1-encrypted, which strings are scanned for identifiers, by which detectors,
 * and what a match becomes. A policy is JSON; `parsePolicy` checks all of it at
 * start-up and names the place of the first error, so a typo in a policy stops
 * the process instead of letting identifiers through.
 *
 * @example
 * ```ts
 * const policy = parsePolicy('{"version": 1, "pseudonymize": [{"field": "patient_id"}]}', "inline");
 * ```
 *
 * @module
 */
import {
  createMrnDetector,
  createRegexDetector,
  type Detector,
  DETECTOR_NAMES,
  DETECTORS,
  InvalidPatternError,
} from "./pii_detectors.ts";
import defaultPolicyJson from "./privacy_policy_default.json" with { type: "json" };

/** Raised for a policy that cannot be used; the message starts with the source and the place. */
export class PolicyError extends Error {
  override name = "PolicyError";
  /** The file name (or other source) of the policy. */
  readonly source: string;
  /** `line L column C` for a syntax error, or a JSON path such as `detectors[3]`. */
  readonly place: string;
  constructor(source: string, place: string, problem: string) {
    super(`${source}: ${place}: ${problem}`);
    this.source = source;
    this.place = place;
  }
}

/** What a detector match becomes: `[REDACTED:<label>]`, or a keyed token `<detector>_<keyid>_<mac>`. */
export type ReplacementMode = "redact" | "token";

/** A policy as written in JSON (version 1). Every list is optional. */
export interface PrivacyPolicy {
  version: 1;
  /** Fields replaced by a keyed token; `prefix` (default `pt`) starts the token. */
  pseudonymize?: { field: string; prefix?: string }[];
  /** Fields removed from the entry. */
  drop?: string[];
  /**
   * Fields encrypted with FF1, keeping their shape: characters of `alphabet` are
   * encrypted, characters of `keep` (e.g. `-`) stay in place, anything else is refused.
   */
  ff1?: { field: string; alphabet: string; keep?: string }[];
  /** Strings scanned by the detectors: `"*"` for every string value, or a list of fields; `except` skips fields. */
  scan?: { fields: "*" | string[]; except?: string[] };
  /** Built-in detectors that run (see `DETECTOR_NAMES`). */
  detectors?: string[];
  /** Pattern for the `mrn` detector when the site's record numbers look different. */
  mrn_pattern?: string;
  /** Extra regex detectors; the detector name is the label in lower case. */
  custom?: { label: string; pattern: string; flags?: string }[];
  /** Replacement per detector name, with `default` for the rest (itself `redact` by default). */
  replacement?: Record<string, ReplacementMode>;
}

/** A field path split at dots: `details.note` is `["details", "note"]`. */
export type FieldPath = readonly string[];

/** A checked policy with its detectors built, ready for `createDeidentifier`. */
export interface CompiledPolicy {
  /** Where the policy came from (file name, or `built-in`). */
  readonly source: string;
  /** The policy as parsed. */
  readonly policy: PrivacyPolicy;
  readonly pseudonymize: readonly { path: FieldPath; prefix: string }[];
  readonly drop: readonly FieldPath[];
  readonly ff1: readonly { path: FieldPath; alphabet: string; keep: string }[];
  /** `"*"` for every string value, or the paths to scan. */
  readonly scanFields: "*" | readonly FieldPath[];
  /** Paths never scanned (their subtrees included). */
  readonly scanExcept: readonly FieldPath[];
  /** Built-in, MRN and custom detectors, in the order they run. */
  readonly detectors: readonly Detector[];
  /** Replacement mode for each detector in `detectors`, by detector name. */
  readonly replacement: Readonly<Record<string, ReplacementMode>>;
}

const TOP_KEYS = [
  "version",
  "pseudonymize",
  "drop",
  "ff1",
  "scan",
  "detectors",
  "mrn_pattern",
  "custom",
  "replacement",
];
const PREFIX_RE = /^[a-z][a-z0-9_]{0,31}$/;
const LABEL_RE = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
const FIELD_RE = /^[^.\s]+(\.[^.\s]+)*$/;

/**
 * Parses and checks a policy. `source` names it in error messages.
 *
 * @throws {PolicyError} for invalid JSON (with line and column) or an invalid policy (with the JSON path)
 */
export function parsePolicy(text: string, source: string): CompiledPolicy {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const { line, column } = lineColumn(text, jsonErrorOffset(text));
    const problem = (err as Error).message.replace(/ in JSON at position.*$/, "").replace(
      /^(Unexpected token '.+?'),.*$/s,
      "$1",
    );
    throw new PolicyError(source, `line ${line} column ${column}`, `invalid JSON: ${problem}`);
  }
  return compilePolicy(raw, source);
}

/**
 * Reads and parses a policy file.
 *
 * @throws {PolicyError} when the file cannot be read or the policy is invalid
 */
export async function loadPolicy(path: string): Promise<CompiledPolicy> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new PolicyError(path, "file", `cannot read policy: ${(err as Error).message}`);
  }
  return parsePolicy(text, path);
}

/**
 * Checks an already parsed policy value and builds its detectors.
 *
 * @throws {PolicyError} naming the JSON path of the first problem
 */
export function compilePolicy(raw: unknown, source: string): CompiledPolicy {
  const fail = (place: string, problem: string): never => {
    throw new PolicyError(source, place, problem);
  };
  if (!isObject(raw)) return fail("(root)", `expected an object, got ${typeName(raw)}`);
  for (const key of Object.keys(raw)) {
    if (!TOP_KEYS.includes(key)) fail(key, `unknown key; known: ${TOP_KEYS.join(", ")}`);
  }
  if (raw.version !== 1) fail("version", `expected 1, got ${JSON.stringify(raw.version)}`);

  const fieldAt = (value: unknown, place: string): FieldPath => {
    if (typeof value !== "string" || !FIELD_RE.test(value)) {
      return fail(place, `expected a field name (dots for nested fields, e.g. "details.note"), got ${show(value)}`);
    }
    return value.split(".");
  };
  const arrayAt = (value: unknown, place: string): unknown[] => {
    if (value === undefined) return [];
    return Array.isArray(value) ? value : fail(place, `expected an array, got ${typeName(value)}`);
  };
  const objectAt = (value: unknown, place: string, keys: string[], required: string[]): Record<string, unknown> => {
    if (!isObject(value)) return fail(place, `expected an object, got ${typeName(value)}`);
    for (const k of Object.keys(value)) {
      if (!keys.includes(k)) fail(`${place}.${k}`, `unknown key; known: ${keys.join(", ")}`);
    }
    for (const k of required) if (!(k in value)) fail(place, `missing "${k}"`);
    return value;
  };

  // Every transformed field, to refuse one field named twice (or inside another).
  const claimed: { path: FieldPath; place: string }[] = [];
  const claim = (path: FieldPath, place: string) => {
    for (const other of claimed) {
      if (isPrefix(other.path, path) || isPrefix(path, other.path)) {
        fail(place, `field "${path.join(".")}" overlaps "${other.path.join(".")}" at ${other.place}`);
      }
    }
    claimed.push({ path, place });
  };

  const pseudonymize = arrayAt(raw.pseudonymize, "pseudonymize").map((item, i) => {
    const place = `pseudonymize[${i}]`;
    const o = objectAt(item, place, ["field", "prefix"], ["field"]);
    const path = fieldAt(o.field, `${place}.field`);
    const prefix = o.prefix ?? "pt";
    if (typeof prefix !== "string" || !PREFIX_RE.test(prefix)) {
      fail(`${place}.prefix`, `expected lower-case letters, digits or _ (at most 32), got ${show(prefix)}`);
    }
    claim(path, place);
    return { path, prefix: prefix as string };
  });

  const drop = arrayAt(raw.drop, "drop").map((item, i) => {
    const path = fieldAt(item, `drop[${i}]`);
    claim(path, `drop[${i}]`);
    return path;
  });

  const ff1 = arrayAt(raw.ff1, "ff1").map((item, i) => {
    const place = `ff1[${i}]`;
    const o = objectAt(item, place, ["field", "alphabet", "keep"], ["field", "alphabet"]);
    const path = fieldAt(o.field, `${place}.field`);
    const alphabet = o.alphabet;
    if (typeof alphabet !== "string" || [...alphabet].length < 2 || new Set(alphabet).size !== [...alphabet].length) {
      fail(`${place}.alphabet`, `expected at least 2 distinct characters, got ${show(alphabet)}`);
    }
    const keep = o.keep ?? "";
    if (typeof keep !== "string") return fail(`${place}.keep`, `expected a string, got ${typeName(keep)}`);
    for (const ch of keep) {
      if ((alphabet as string).includes(ch)) {
        fail(`${place}.keep`, `character ${JSON.stringify(ch)} is in the alphabet`);
      }
    }
    claim(path, place);
    return { path, alphabet: alphabet as string, keep };
  });

  let scanFields: "*" | FieldPath[] = [];
  let scanExcept: FieldPath[] = [];
  if (raw.scan !== undefined) {
    const o = objectAt(raw.scan, "scan", ["fields", "except"], ["fields"]);
    scanFields = o.fields === "*"
      ? "*"
      : Array.isArray(o.fields)
      ? o.fields.map((f, i) => fieldAt(f, `scan.fields[${i}]`))
      : fail("scan.fields", `expected "*" or an array of field names, got ${show(o.fields)}`);
    scanExcept = arrayAt(o.except, "scan.except").map((f, i) => fieldAt(f, `scan.except[${i}]`));
  }

  const detectors: Detector[] = [];
  const names = new Set<string>();
  arrayAt(raw.detectors, "detectors").forEach((name, i) => {
    const place = `detectors[${i}]`;
    if (typeof name !== "string") return fail(place, `expected a detector name, got ${typeName(name)}`);
    if (!Object.hasOwn(DETECTORS, name)) {
      return fail(place, `unknown detector ${JSON.stringify(name)}; known: ${DETECTOR_NAMES.join(", ")}`);
    }
    if (names.has(name)) return fail(place, `detector "${name}" is listed twice`);
    names.add(name);
    detectors.push(
      name === "mrn" && raw.mrn_pattern !== undefined ? mrnDetector(raw.mrn_pattern, fail) : DETECTORS[name]!,
    );
  });
  if (raw.mrn_pattern !== undefined && !names.has("mrn")) {
    fail("mrn_pattern", `is set but "detectors" does not list "mrn"`);
  }

  arrayAt(raw.custom, "custom").forEach((item, i) => {
    const place = `custom[${i}]`;
    const o = objectAt(item, place, ["label", "pattern", "flags"], ["label", "pattern"]);
    if (typeof o.label !== "string" || !LABEL_RE.test(o.label)) {
      return fail(
        `${place}.label`,
        `expected letters, digits or _ starting with a letter (at most 32), got ${show(o.label)}`,
      );
    }
    const name = o.label.toLowerCase();
    if (names.has(name)) return fail(`${place}.label`, `detector name "${name}" is already used`);
    if (typeof o.pattern !== "string" || o.pattern === "") {
      return fail(`${place}.pattern`, `expected a regular expression, got ${show(o.pattern)}`);
    }
    const flags = o.flags ?? "";
    if (typeof flags !== "string" || !/^[imsu]*$/.test(flags)) {
      return fail(`${place}.flags`, `expected some of the flags "imsu", got ${show(flags)}`);
    }
    try {
      detectors.push(createRegexDetector(name, o.label, o.pattern, flags));
    } catch (err) {
      if (err instanceof InvalidPatternError || err instanceof SyntaxError) {
        return fail(`${place}.pattern`, err.message);
      }
      throw err;
    }
    names.add(name);
  });

  const replacement: Record<string, ReplacementMode> = {};
  let fallback: ReplacementMode = "redact";
  const modes: Record<string, unknown> = raw.replacement === undefined
    ? {}
    : isObject(raw.replacement)
    ? raw.replacement
    : fail("replacement", `expected an object, got ${typeName(raw.replacement)}`);
  for (const [key, mode] of Object.entries(modes)) {
    const place = `replacement.${key}`;
    if (mode !== "redact" && mode !== "token") fail(place, `expected "redact" or "token", got ${show(mode)}`);
    if (key === "default") fallback = mode as ReplacementMode;
    else if (!names.has(key)) fail(place, `no detector "${key}" in this policy; detectors: ${[...names].join(", ")}`);
  }
  for (const d of detectors) replacement[d.name] = (modes[d.name] as ReplacementMode | undefined) ?? fallback;

  return {
    source,
    policy: raw as unknown as PrivacyPolicy,
    pseudonymize,
    drop,
    ff1,
    scanFields,
    scanExcept,
    detectors,
    replacement,
  };
}

/** The built-in healthcare policy (shared/privacy_policy_default.json), used when no `--policy` is given. */
export const DEFAULT_POLICY: CompiledPolicy = compilePolicy(defaultPolicyJson, "built-in healthcare policy");

function mrnDetector(pattern: unknown, fail: (place: string, problem: string) => never): Detector {
  if (typeof pattern !== "string" || pattern === "") {
    return fail("mrn_pattern", `expected a regular expression, got ${show(pattern)}`);
  }
  try {
    return createMrnDetector(pattern);
  } catch (err) {
    if (err instanceof InvalidPatternError || err instanceof SyntaxError) return fail("mrn_pattern", err.message);
    throw err;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isPrefix(a: FieldPath, b: FieldPath): boolean {
  return a.length <= b.length && a.every((seg, i) => seg === b[i]);
}

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : typeof v === "object" ? "an object" : typeof v;
}

function show(v: unknown): string {
  return v === undefined ? "nothing" : JSON.stringify(v);
}

/** Line and column (both from 1) of a character offset. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let start = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      start = i + 1;
    }
  }
  return { line, column: offset - start + 1 };
}

/**
 * Offset of the first JSON syntax error in `text`. V8 names the position for
 * some errors only ("Unexpected token 'x', ... is not valid JSON" has none),
 * so the text is scanned again here.
 */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const bad = (): never => {
    throw i;
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
  };
  const lit = (word: string) => {
    for (const ch of word) {
      if (text[i] !== ch) bad();
      i++;
    }
  };
  const str = () => {
    i++;
    for (;;) {
      if (i >= text.length) bad();
      const c = text.charCodeAt(i);
      if (c === 34) return void i++;
      if (c < 32) bad();
      if (c === 92) {
        i++;
        const e = text[i];
        if (e === "u") {
          for (let k = 0; k < 4; k++) {
            i++;
            if (!/[0-9a-fA-F]/.test(text[i] ?? "")) bad();
          }
          i++;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i++;
        else bad();
      } else i++;
    }
  };
  const num = () => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) bad();
    i += m![0].length;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      ws();
      if (text[i] === "}") return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') bad();
        str();
        ws();
        if (text[i] !== ":") bad();
        i++;
        value();
        ws();
        if (text[i] === "}") return void i++;
        if (text[i] !== ",") bad();
        i++;
      }
    } else if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === "]") return void i++;
        if (text[i] !== ",") bad();
        i++;
      }
    } else if (c === '"') str();
    else if (c === "t") lit("true");
    else if (c === "f") lit("false");
    else if (c === "n") lit("null");
    else if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) num();
    else bad();
  };
  try {
    value();
    ws();
    if (i < text.length) bad();
  } catch (pos) {
    if (typeof pos === "number") return Math.min(pos, text.length);
    throw pos;
  }
  return text.length;
}
