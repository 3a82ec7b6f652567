/**
 * `tlslog reidentify`: reverses the FF1 fields of de-identified entries, only
 * with the FF1 key. Keyed pseudonyms and redactions cannot be reversed. Every
 * run leaves an audit record (who, when, which key, how many entries and
 * fields) on stderr and, with --audit-log, in a file.
 *
 * @module
 */
import { readLineChunks } from "../client/line_reader.ts";
import { reidentify } from "../shared/deidentify.ts";
import { createFf1Cipher } from "../shared/ff1_cipher.ts";
import { InvalidEntryError, parseEntry } from "../shared/json_entry.ts";
import { loadPolicy } from "../shared/privacy_policy.ts";
import { parseKey } from "../shared/pseudonymizer.ts";
import { type CommandSpec, formatHelp, parseFlags, stringFlag, UsageError } from "./flags.ts";

/** The command's flags and help. */
export const reidentifySpec: CommandSpec = {
  name: "reidentify",
  summary: "Decrypt the FF1-encrypted fields of de-identified entries (needs the FF1 key); every run is audited.",
  usage: "tlslog reidentify --policy FILE --ff1-key-file FILE [flags] [FILE|-]",
  positionals: true,
  flags: {
    policy: { type: "string", arg: "file", help: "the privacy policy the entries were de-identified with (required)" },
    "ff1-key-file": { type: "string", arg: "file", help: "the FF1 key (required)" },
    reason: { type: "string", help: "why the data is re-identified (recorded in the audit record)" },
    "audit-log": { type: "string", arg: "file", help: "also append the audit record (JSON) to this file" },
  },
  examples: [
    "tlslog reidentify --policy policy.json --ff1-key-file ff1.key --reason 'case 4411' data/tlslog-00000007.jsonl",
  ],
};

/** Runs `tlslog reidentify`; resolves to the exit code. */
export async function runReidentify(args: string[]): Promise<number> {
  const flags = parseFlags(reidentifySpec, args);
  if (flags.help) {
    console.log(formatHelp(reidentifySpec));
    return 0;
  }
  const policyPath = stringFlag(flags, "policy");
  const keyPath = stringFlag(flags, "ff1-key-file");
  if (!policyPath || !keyPath) throw new UsageError("--policy and --ff1-key-file are both required", "reidentify");
  if (flags.positionals.length > 1) throw new UsageError("takes at most one FILE", "reidentify");
  const policy = await loadPolicy(policyPath);
  if (policy.ff1.length === 0) throw new UsageError(`policy ${policyPath} encrypts no field with FF1`, "reidentify");
  const ff1 = createFf1Cipher(parseKey(await Deno.readTextFile(keyPath)));
  const path = flags.positionals[0] ?? "-";
  const source = path === "-" ? "<stdin>" : path;
  const stream = path === "-" ? Deno.stdin.readable : (await Deno.open(path)).readable;
  let entries = 0;
  let failed = 0;
  const out: string[] = [];
  for await (const chunk of readLineChunks(stream, source)) {
    for (let i = 0; i < chunk.lines.length; i++) {
      const text = chunk.lines[i]!.trim();
      if (text === "") continue;
      try {
        out.push(JSON.stringify(reidentify(parseEntry(text), policy, ff1)));
        entries++;
      } catch (err) {
        failed++;
        const why = err instanceof InvalidEntryError ? err.message : (err as Error).message;
        console.error(`reidentify: ${source}:${chunk.firstLine + i}: ${why}`);
      }
    }
    if (out.length > 0) await Deno.stdout.write(new TextEncoder().encode(out.splice(0).join("\n") + "\n"));
  }
  const audit = {
    event: "reidentify",
    time: new Date().toISOString(),
    user: Deno.env.get("USER") ?? Deno.env.get("LOGNAME") ?? `uid ${Deno.uid() ?? "?"}`,
    source,
    policy: policy.source,
    ff1_key_id: ff1.keyId,
    fields: policy.ff1.map((r) => r.path.join(".")),
    entries,
    failed,
    reason: stringFlag(flags, "reason") ?? null,
  };
  console.error(`reidentify: AUDIT ${JSON.stringify(audit)}`);
  const auditLog = stringFlag(flags, "audit-log");
  if (auditLog) await Deno.writeTextFile(auditLog, JSON.stringify(audit) + "\n", { append: true, mode: 0o600 });
  return failed === 0 ? 0 : 1;
}
