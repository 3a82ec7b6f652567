/**
 * `tlslog report DATA_DIR`: what a store says about de-identification.
 * Exit 0 when no detector finds anything in it, 1 when one does.
 *
 * @module
 */
import { buildComplianceReport, type ComplianceReport } from "../server/compliance_report.ts";
import { ff1Paths } from "../shared/deidentify.ts";
import { DEFAULT_POLICY, loadPolicy } from "../shared/privacy_policy.ts";
import { type CommandSpec, formatHelp, parseFlags, stringFlag, UsageError } from "./flags.ts";

/** The command's flags and help. */
export const reportSpec: CommandSpec = {
  name: "report",
  summary:
    "Report on de-identification in a data directory: tokens and key ids, redactions, what detectors still find.",
  usage: "tlslog report [flags] DATA_DIR",
  positionals: true,
  flags: {
    policy: { type: "string", arg: "file", help: "privacy policy whose detectors to run (default: built-in)" },
    json: { type: "boolean", help: "print the report as JSON" },
  },
  examples: ["tlslog report ./data", "tlslog report --json /var/lib/tlslog"],
};

function counts(record: Record<string, number>): string {
  const entries = Object.entries(record);
  return entries.length === 0 ? "none" : entries.map(([k, v]) => `${k} ${v}`).join(", ");
}

/** The report as text. */
export function formatReport(dir: string, r: ComplianceReport, policySource: string): string {
  const rows: [string, string | number][] = [
    ["data directory", dir],
    ["detectors from", policySource],
    ["data files", r.data_files],
    ["entries checked", r.entries_checked],
    ["fields pseudonymised", r.fields_pseudonymised],
    ["key ids in use", counts(r.key_ids)],
    ["redactions", counts(r.redactions)],
    ["entries with findings", r.entries_with_violations],
    ["findings by detector", counts(r.violations_by_detector)],
    ["quarantined entries", r.quarantined],
    ["unreadable lines", r.unreadable_lines],
  ];
  const lines = rows.map(([k, v]) => `  ${k.padEnd(22)} ${v}`);
  for (const e of r.examples) lines.push(`  finding: ${e.file}:${e.line}: field "${e.field}" holds ${e.detector}`);
  return "compliance report:\n" + lines.join("\n");
}

/** Runs `tlslog report`; resolves to the exit code. */
export async function runReport(args: string[]): Promise<number> {
  const flags = parseFlags(reportSpec, args);
  if (flags.help) {
    console.log(formatHelp(reportSpec));
    return 0;
  }
  if (flags.positionals.length !== 1) throw new UsageError("needs exactly one DATA_DIR", "report");
  const dir = flags.positionals[0]!;
  const policyPath = stringFlag(flags, "policy");
  const policy = policyPath ? await loadPolicy(policyPath) : DEFAULT_POLICY;
  const report = await buildComplianceReport(dir, policy.detectors, 10, ff1Paths(policy));
  console.log(flags.values.json ? JSON.stringify(report, null, 2) : formatReport(dir, report, policy.source));
  return report.entries_with_violations === 0 ? 0 : 1;
}
