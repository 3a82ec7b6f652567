/**
 * The collector's check that what arrives was de-identified: the same
 * detectors the senders' policy runs are applied to every entry, and an entry
 * in which they still find something is refused (`reject`), set aside in a
 * restricted file (`quarantine`), or fixed (`redact`). Every case is counted.
 *
 * @module
 */
import { checkDeidentified, type Finding } from "../shared/deidentify.ts";
import { type Detector, redactText } from "../shared/pii_detectors.ts";
import type { StatsSnapshot } from "../shared/stats_snapshot.ts";
import { countMarks } from "./compliance_report.ts";

/** Counters of the guard: the `privacy` section of /api/stats (defined with the other stats in shared/). */
export type GuardStats = NonNullable<StatsSnapshot["privacy"]>;

/** What to do with an entry that is still identifiable. */
export type GuardMode = GuardStats["mode"];

/** The guard's decision for one entry. */
export type GuardVerdict =
  | { action: "store"; line: string }
  | { action: "reject" | "quarantine"; line: string; error: string; findings: Finding[] };

/** Checks entries against detectors; see the module doc. */
export interface PrivacyGuard {
  /** Decides for one entry given as its JSON line and parsed value. */
  check(line: string, entry: Record<string, unknown>): GuardVerdict;
  readonly stats: GuardStats;
}

/** Describes findings for an error answer: which field holds what. */
export function describeFindings(findings: readonly Finding[]): string {
  return findings.map((f) => `field "${f.field}" holds ${f.detector}`).join("; ");
}

/** A copy of `value` with every detector match in its strings replaced by `[REDACTED:<label>]`. */
function redactDeep(value: unknown, detectors: readonly Detector[], labels: Map<string, string>): unknown {
  if (typeof value === "string") {
    return redactText(value, detectors, (m) => `[REDACTED:${labels.get(m.detector) ?? m.detector}]`).text;
  }
  if (typeof value === "number" && (value >= 1e6 || value <= -1e6)) {
    const text = String(value);
    const out = redactDeep(text, detectors, labels);
    return out === text ? value : out;
  }
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, detectors, labels));
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redactDeep(v, detectors, labels);
    return out;
  }
  return value;
}

/** Builds a guard running `detectors` in `mode`, not looking into the paths of `skip` (FF1 fields). */
export function createPrivacyGuard(
  mode: GuardMode,
  detectors: readonly Detector[],
  skip: ReadonlySet<string> = new Set(),
): PrivacyGuard {
  const labels = new Map(detectors.map((d) => [d.name, d.label]));
  const stats: GuardStats = {
    mode,
    entries_checked: 0,
    entries_identifiable: 0,
    rejected: 0,
    quarantined: 0,
    redacted: 0,
    by_detector: {},
    fields_pseudonymised: 0,
    key_ids: {},
    redactions: {},
  };
  return {
    stats,
    check(line, entry) {
      stats.entries_checked++;
      countMarks(entry, stats);
      const findings = checkDeidentified(entry, detectors, skip);
      if (findings.length === 0) return { action: "store", line };
      stats.entries_identifiable++;
      for (const f of findings) stats.by_detector[f.detector] = (stats.by_detector[f.detector] ?? 0) + 1;
      if (mode === "redact") {
        stats.redacted++;
        return { action: "store", line: JSON.stringify(redactDeep(entry, detectors, labels)) };
      }
      const error = `entry is not de-identified: ${describeFindings(findings)} (--require-deidentified ${mode})`;
      if (mode === "reject") stats.rejected++;
      else stats.quarantined++;
      return { action: mode, line, error, findings };
    },
  };
}
