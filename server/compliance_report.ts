/**
 * What a data directory says about de-identification, for `tlslog report`:
 * entries checked, pseudonymised fields and the key ids that made them,
 * redactions by label, what the detectors still find (violations), and the
 * quarantine.
 *
 * @module
 */
import { join } from "node:path";
import { checkDeidentified } from "../shared/deidentify.ts";
import type { Detector } from "../shared/pii_detectors.ts";
import { listDataFiles, readStoreText } from "./store_files.ts";

/** The report. */
export interface ComplianceReport extends DeidentificationMarks {
  data_files: number;
  entries_checked: number;
  /** Entries in which a detector still finds something. */
  entries_with_violations: number;
  violations_by_detector: Record<string, number>;
  /** The first violations, where they are: file, line, field, detector. */
  examples: { file: string; line: number; field: string; detector: string }[];
  /** Entries set aside by --require-deidentified quarantine. */
  quarantined: number;
  /** Lines that are not JSON (damage). */
  unreadable_lines: number;
}

const TOKEN = /^[a-z][a-z0-9_]{0,31}_(k[0-9a-f]{6})_[A-Za-z0-9_-]{22}$/;
const REDACTED = /\[REDACTED:([A-Za-z0-9_]+)\]/g;

/** What de-identification left in entries: tokens by key id, redaction markers by label. */
export interface DeidentificationMarks {
  fields_pseudonymised: number;
  key_ids: Record<string, number>;
  redactions: Record<string, number>;
}

/** Adds the tokens and `[REDACTED:<LABEL>]` markers found in `value`'s strings to `marks`. */
export function countMarks(value: unknown, marks: DeidentificationMarks): void {
  if (typeof value === "string") {
    const token = TOKEN.exec(value);
    if (token) {
      marks.fields_pseudonymised++;
      marks.key_ids[token[1]!] = (marks.key_ids[token[1]!] ?? 0) + 1;
    }
    if (value.includes("[REDACTED:")) {
      for (const m of value.matchAll(REDACTED)) marks.redactions[m[1]!] = (marks.redactions[m[1]!] ?? 0) + 1;
    }
  } else if (Array.isArray(value)) {
    for (const v of value) countMarks(v, marks);
  } else if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) countMarks(v, marks);
  }
}

/** Reads every data file of `dataDir` (and its quarantine) and reports. */
export async function buildComplianceReport(
  dataDir: string,
  detectors: readonly Detector[],
  maxExamples = 10,
  skip: ReadonlySet<string> = new Set(),
): Promise<ComplianceReport> {
  const report: ComplianceReport = {
    data_files: 0,
    entries_checked: 0,
    fields_pseudonymised: 0,
    key_ids: {},
    redactions: {},
    entries_with_violations: 0,
    violations_by_detector: {},
    examples: [],
    quarantined: 0,
    unreadable_lines: 0,
  };
  for (const name of await listDataFiles(dataDir)) {
    report.data_files++;
    const lines = (await readStoreText(dataDir, name)).split("\n");
    for (let i = 0; i < lines.length; i++) {
      if (lines[i] === "") continue;
      let entry: unknown;
      try {
        entry = JSON.parse(lines[i]!);
      } catch {
        report.unreadable_lines++;
        continue;
      }
      report.entries_checked++;
      countMarks(entry, report);
      const findings = checkDeidentified(entry, detectors, skip);
      if (findings.length === 0) continue;
      report.entries_with_violations++;
      for (const f of findings) {
        report.violations_by_detector[f.detector] = (report.violations_by_detector[f.detector] ?? 0) + 1;
        if (report.examples.length < maxExamples) report.examples.push({ file: name, line: i + 1, ...f });
      }
    }
  }
  try {
    const text = await Deno.readTextFile(join(dataDir, "quarantine", "quarantine.jsonl"));
    report.quarantined = text.split("\n").filter((l) => l !== "").length;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return report;
}
