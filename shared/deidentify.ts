/**
 * The de-identification transform: applies a {@linkcode CompiledPolicy} to one
 * log entry. Named fields are pseudonymised, dropped or FF1-encrypted; strings
 * are scanned by the policy's detectors and each match becomes
 * `[REDACTED:<label>]` or a keyed token. The input is never changed: the output
 * shares every subtree that needed no change, so an entry with nothing to hide
 * costs one walk and no copy.
 *
 * @example
 * ```ts
 * const d = createDeidentifier(DEFAULT_POLICY, { pseudonymizer: createPseudonymizer(key) });
 * d.apply({ patient_id: "483920", note: "call (555) 123-4567" });
 * // { patient_id: "pt_k..._...", note: "call [REDACTED:PHONE]" }
 * ```
 *
 * @module
 */
import type { CompiledPolicy, FieldPath, ReplacementMode } from "./privacy_policy.ts";
import type { Ff1Cipher } from "./ff1_cipher.ts";
import type { Pseudonymizer } from "./pseudonymizer.ts";
import { type Detector, findPii, type PiiMatch, redactText } from "./pii_detectors.ts";

/** Raised when a policy encrypts fields with FF1 but no FF1 key was given. */
export class MissingFf1KeyError extends Error {
  override name = "MissingFf1KeyError";
}

/** Counters of what a deidentifier did, updated by every `apply`. */
export interface DeidentifyStats {
  /** Entries passed to `apply`. */
  entries: number;
  /** Field values replaced by a keyed token. */
  pseudonymized: number;
  /** Fields removed. */
  dropped: number;
  /** Field values encrypted with FF1. */
  ff1Encrypted: number;
  /** FF1 field values that could not be encrypted (domain too small, foreign character) and were redacted instead. */
  ff1Refused: number;
  /** Detector matches replaced, by detector name. */
  redactions: Record<string, number>;
}

/** Keys for a deidentifier: the pseudonymiser always, an FF1 cipher when the policy has `ff1` fields. */
export interface DeidentifyKeys {
  pseudonymizer: Pseudonymizer;
  ff1?: Ff1Cipher;
}

/** Applies a policy to entries. */
export interface Deidentifier {
  /** A de-identified copy of `entry` (the same object when nothing needed a change). */
  apply(entry: Record<string, unknown>): Record<string, unknown>;
  /** Counters since creation. */
  readonly stats: DeidentifyStats;
}

/** What a policy says about one field, and about the fields under it. */
interface PlanNode {
  rule?:
    | { kind: "pseudonymize"; prefix: string }
    | { kind: "drop" }
    | { kind: "ff1"; alphabet: string; keep: string };
  /** Scan this subtree (named in `scan.fields`). */
  scan: boolean;
  /** Never scan this subtree (named in `scan.except`). */
  except: boolean;
  children: Map<string, PlanNode>;
}

const DROP = Symbol("drop");
const TOKEN_CACHE_SIZE = 100_000;
const CLEAN_CACHE_SIZE = 10_000;
const CLEAN_CACHE_MAX_LENGTH = 40;
/** The value written in place of an FF1 field that cannot be encrypted. */
export const FF1_REFUSED = "[REDACTED:FF1]";

/**
 * Builds a deidentifier for `policy`.
 *
 * @throws {MissingFf1KeyError} when the policy has `ff1` fields and `keys.ff1` is missing
 */
export function createDeidentifier(policy: CompiledPolicy, keys: DeidentifyKeys): Deidentifier {
  const { pseudonymizer, ff1 } = keys;
  if (policy.ff1.length > 0 && !ff1) {
    throw new MissingFf1KeyError(
      `policy ${policy.source} encrypts ${
        policy.ff1.map((r) => r.path.join(".")).join(", ")
      } with FF1 but no FF1 key was given`,
    );
  }
  const root = buildPlan(policy);
  const scanAll = policy.scanFields === "*";
  const detectors = policy.detectors;
  const stats: DeidentifyStats = {
    entries: 0,
    pseudonymized: 0,
    dropped: 0,
    ff1Encrypted: 0,
    ff1Refused: 0,
    redactions: Object.fromEntries(detectors.map((d) => [d.name, 0])),
  };
  // Patients recur in every log: a lookup (one map per prefix, no key building) is far cheaper than
  // the two SHA-256 compressions of a token. Bounded: cleared when full.
  const tokens = new Map<string, Map<string, string>>();
  const tokenFor = (text: string, prefix: string): string => {
    let cache = tokens.get(prefix);
    if (!cache) tokens.set(prefix, cache = new Map());
    let t = cache.get(text);
    if (t === undefined) {
      if (cache.size >= TOKEN_CACHE_SIZE) cache.clear();
      t = pseudonymizer.token(text, prefix);
      cache.set(text, t);
    }
    return t;
  };
  const replacers = new Map<string, (original: string) => string>();
  for (const d of detectors) {
    const mode: ReplacementMode = policy.replacement[d.name] ?? "redact";
    const marker = `[REDACTED:${d.label}]`;
    replacers.set(d.name, mode === "token" ? (o) => tokenFor(normalize(d.name, o), d.name) : () => marker);
  }
  const replace = (m: PiiMatch, original: string): string => {
    stats.redactions[m.detector] = (stats.redactions[m.detector] ?? 0) + 1;
    const r = replacers.get(m.detector);
    return r ? r(original) : `[REDACTED:${m.detector.toUpperCase()}]`;
  };

  // Short values such as "follow_up" or "CBC" recur in every log: remember the ones with nothing to redact.
  const clean = new Set<string>();
  const scanString = (s: string): string => {
    if (s.length === 0 || clean.has(s)) return s;
    const out = redactText(s, detectors, replace);
    if (out.matches.length > 0) return out.text;
    if (s.length <= CLEAN_CACHE_MAX_LENGTH) {
      if (clean.size >= CLEAN_CACHE_SIZE) clean.clear();
      clean.add(s);
    }
    return s;
  };

  const applyRule = (rule: NonNullable<PlanNode["rule"]>, v: unknown): unknown => {
    if (rule.kind === "drop") {
      stats.dropped++;
      return DROP;
    }
    if (v === null || v === undefined) return v;
    const text = typeof v === "string" ? v : typeof v === "number" ? String(v) : JSON.stringify(v);
    if (rule.kind === "pseudonymize") {
      stats.pseudonymized++;
      return tokenFor(text, rule.prefix);
    }
    try {
      const ct = ff1!.encrypt(text, rule.alphabet, rule.keep);
      stats.ff1Encrypted++;
      return ct;
    } catch {
      stats.ff1Refused++;
      return FF1_REFUSED;
    }
  };

  const walkValue = (v: unknown, node: PlanNode | undefined, scanning: boolean): unknown => {
    if (typeof v === "string") return scanning ? scanString(v) : v;
    if (typeof v === "number") {
      // A number long enough to be a phone, SSN or card number is scanned as text.
      if (scanning && (v >= 1e6 || v <= -1e6)) {
        const s = String(v);
        const r = scanString(s);
        return r === s ? v : r;
      }
      return v;
    }
    if (typeof v !== "object" || v === null) return v;
    if (Array.isArray(v)) {
      let out: unknown[] | undefined;
      for (let i = 0; i < v.length; i++) {
        const nv = walkValue(v[i], node, scanning);
        if (nv !== v[i]) (out ??= v.slice())[i] = nv;
      }
      return out ?? v;
    }
    return walkObject(v as Record<string, unknown>, node, scanning);
  };

  const walkObject = (
    obj: Record<string, unknown>,
    node: PlanNode | undefined,
    scanning: boolean,
  ): Record<string, unknown> => {
    let out: Record<string, unknown> | undefined;
    let dropped = false;
    const visit = (key: string, child: PlanNode | undefined) => {
      const v = obj[key];
      let nv: unknown;
      if (child?.rule) nv = applyRule(child.rule, v);
      else {
        const s = child ? !child.except && (scanning || child.scan) : scanning;
        if (!s && !(child && child.children.size > 0)) return;
        nv = walkValue(v, child, s);
      }
      if (nv === v) return;
      out ??= { ...obj };
      if (nv === DROP) dropped = true;
      out[key] = nv;
    };
    if (scanning) {
      for (const key in obj) visit(key, node?.children.get(key));
    } else if (node) {
      for (const [key, child] of node.children) if (Object.hasOwn(obj, key)) visit(key, child);
    }
    if (dropped && out) {
      const kept: Record<string, unknown> = {};
      for (const key in out) if (out[key] !== DROP) kept[key] = out[key];
      return kept;
    }
    return out ?? obj;
  };

  return {
    stats,
    apply(entry) {
      stats.entries++;
      return walkObject(entry, root, scanAll && !root.except);
    },
  };
}

/**
 * Decrypts the policy's FF1 fields of a de-identified entry (`tlslog reidentify`).
 * Pseudonymised and redacted values cannot be reversed and are left as they are.
 *
 * @throws {Ff1AlphabetError} or {Ff1DomainError} for a value that was not made by FF1 under this policy
 */
export function reidentify(
  entry: Record<string, unknown>,
  policy: CompiledPolicy,
  ff1: Ff1Cipher,
): Record<string, unknown> {
  let out = entry;
  for (const rule of policy.ff1) {
    out = updatePath(out, rule.path, (v) => {
      return typeof v === "string" && v !== FF1_REFUSED ? ff1.decrypt(v, rule.alphabet, rule.keep) : v;
    });
  }
  return out;
}

/** One identifier still present: the field path (e.g. `details.note`, `items[2].text`) and the detector. */
export interface Finding {
  field: string;
  detector: string;
}

/** Field paths (dotted, as checkDeidentified names them) that a policy encrypts with FF1. */
export function ff1Paths(policy: CompiledPolicy): Set<string> {
  return new Set(policy.ff1.map((r) => r.path.join(".")));
}

/**
 * The identifiers `detectors` still find in an entry's string values, once per field and detector,
 * except in the paths of `skip`.
 * The server uses it to refuse or flag entries that were not de-identified.
 */
export function checkDeidentified(
  entry: unknown,
  detectors: readonly Detector[],
  skip: ReadonlySet<string> = new Set(),
): Finding[] {
  const findings: Finding[] = [];
  const walk = (v: unknown, path: string) => {
    // FF1 output keeps the shape of what it encrypted (an SSN stays SSN-shaped): skip those paths.
    if (skip.has(path)) return;
    if (typeof v === "string" || (typeof v === "number" && (v >= 1e6 || v <= -1e6))) {
      const seen = new Set<string>();
      for (const m of findPii(String(v), detectors)) {
        if (seen.has(m.detector)) continue;
        seen.add(m.detector);
        findings.push({ field: path, detector: m.detector });
      }
    } else if (Array.isArray(v)) {
      v.forEach((item, i) => walk(item, `${path}[${i}]`));
    } else if (typeof v === "object" && v !== null) {
      for (const key in v) walk((v as Record<string, unknown>)[key], path === "" ? key : `${path}.${key}`);
    }
  };
  walk(entry, "");
  return findings;
}

function buildPlan(policy: CompiledPolicy): PlanNode {
  const root: PlanNode = { scan: false, except: false, children: new Map() };
  const nodeAt = (path: FieldPath): PlanNode => {
    let node = root;
    for (const seg of path) {
      let child = node.children.get(seg);
      if (!child) node.children.set(seg, child = { scan: false, except: false, children: new Map() });
      node = child;
    }
    return node;
  };
  for (const r of policy.pseudonymize) nodeAt(r.path).rule = { kind: "pseudonymize", prefix: r.prefix };
  for (const path of policy.drop) nodeAt(path).rule = { kind: "drop" };
  for (const r of policy.ff1) nodeAt(r.path).rule = { kind: "ff1", alphabet: r.alphabet, keep: r.keep };
  if (policy.scanFields !== "*") { for (const path of policy.scanFields) nodeAt(path).scan = true; }
  for (const path of policy.scanExcept) nodeAt(path).except = true;
  return root;
}

/** Copy of `obj` with the value at `path` replaced by `f(value)`; arrays on the way apply to each element. */
function updatePath(obj: unknown, path: FieldPath, f: (v: unknown) => unknown): Record<string, unknown> {
  const go = (v: unknown, depth: number): unknown => {
    if (Array.isArray(v)) {
      const mapped = v.map((item) => go(item, depth));
      return mapped.every((m, i) => m === v[i]) ? v : mapped;
    }
    if (typeof v !== "object" || v === null) return v;
    const o = v as Record<string, unknown>;
    const key = path[depth]!;
    if (!Object.hasOwn(o, key)) return o;
    const nv = depth === path.length - 1 ? f(o[key]) : go(o[key], depth + 1);
    return nv === o[key] ? o : { ...o, [key]: nv };
  };
  return go(obj, 0) as Record<string, unknown>;
}

/** The same e-mail, phone or SSN written differently gets the same token. */
function normalize(detector: string, original: string): string {
  if (detector === "email") return original.toLowerCase();
  if (detector === "phone" || detector === "ssn" || detector === "card") return original.replace(/\D/g, "");
  return original;
}
