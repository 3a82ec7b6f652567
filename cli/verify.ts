/**
 * `tlslog verify DATA_DIR`: checks a store against its hash chain and signed
 * checkpoints. Exit 0 when intact, 1 with the file, line and kind of every
 * damage found.
 *
 * @module
 */
import { join } from "node:path";
import { type EncryptionKey, readEncryptionKey } from "../server/sealed_file.ts";
import { parseVerifierKey } from "../server/signed_note.ts";
import { VERIFIER_KEY_NAME } from "../server/store_checkpoint.ts";
import { type VerifyReport, verifyStore } from "../server/store_verifier.ts";
import { type CommandSpec, formatHelp, parseFlags, stringFlag, UsageError } from "./flags.ts";

/** The command's flags and help. */
export const verifySpec: CommandSpec = {
  name: "verify",
  summary:
    "Check that a data directory is complete and unaltered: every entry against the hash chain, the chain against the signed checkpoints, and the audit log.",
  usage: "tlslog verify [flags] DATA_DIR",
  positionals: true,
  flags: {
    pubkey: {
      type: "string",
      arg: "file",
      help: "the checkpoint verifier key (keys/tlslog-checkpoint.pub); default: the copy in DATA_DIR, which proves " +
        "consistency only",
    },
    "trusted-checkpoint": {
      type: "string",
      arg: "file",
      help:
        "a checkpoint kept elsewhere (--checkpoint-copy DIR/checkpoint): the store must contain it, or it was rolled back",
    },
    "encrypt-key": { type: "string", arg: "file[,file]", help: "key(s) of encrypted files" },
    json: { type: "boolean", help: "print the report as JSON" },
  },
  examples: [
    "tlslog verify ./data --pubkey keys/tlslog-checkpoint.pub",
    "tlslog verify /var/lib/tlslog --pubkey ck.pub --trusted-checkpoint /mnt/anchor/checkpoint --encrypt-key at-rest.key",
  ],
};

/** Keys named by a comma-separated `--encrypt-key` value. */
export async function encryptionKeysFromFlag(value: string | undefined): Promise<EncryptionKey[]> {
  if (value === undefined) return [];
  return await Promise.all(value.split(",").filter(Boolean).map((path) => readEncryptionKey(path)));
}

/** The report as text. */
export function formatVerifyReport(dir: string, r: VerifyReport): string {
  const lines: string[] = [];
  for (const d of r.damage) {
    lines.push(`DAMAGE ${d.file}${d.line !== undefined ? `:${d.line}` : ""}: ${d.kind}: ${d.message}`);
  }
  for (const n of r.notes) lines.push(`note: ${n}`);
  const latest = r.latest
    ? `latest covers ${r.latest.size} entries, signed ${new Date(r.latest.time).toISOString()}`
    : "none valid";
  const range = r.entries === 0 ? "no entries" : `entries ${r.lastSeq - r.entries + 1}..${r.lastSeq}`;
  lines.push(
    `${r.ok ? "OK" : "FAILED"}: ${dir}: ${range} in ${r.files} data files` +
      (r.prunedThrough > 0 ? ` (entries 1..${r.prunedThrough} deleted by retention, as signed)` : "") +
      `; ${r.checkpoints} checkpoints, ${latest}; audit log ${r.auditEvents} events` +
      (r.ok ? "" : `; ${r.damage.length} problem${r.damage.length === 1 ? "" : "s"}`),
  );
  return lines.join("\n");
}

/** Runs `tlslog verify`; resolves to the exit code. */
export async function runVerify(args: string[]): Promise<number> {
  const flags = parseFlags(verifySpec, args);
  if (flags.help) {
    console.log(formatHelp(verifySpec));
    return 0;
  }
  if (flags.positionals.length !== 1) throw new UsageError("needs exactly one DATA_DIR", "verify");
  const dir = flags.positionals[0]!;
  if (!(await Deno.stat(dir).catch(() => null))?.isDirectory) throw new UsageError(`no directory ${dir}`, "verify");
  let pubkeyPath = stringFlag(flags, "pubkey");
  if (pubkeyPath === undefined) {
    pubkeyPath = join(dir, VERIFIER_KEY_NAME);
    console.error(
      `tlslog verify: warning: no --pubkey: using ${pubkeyPath}, which lives in the directory being checked; ` +
        `this shows the store is consistent, not that it was signed by the key you trust`,
    );
  }
  const verifier = parseVerifierKey(await Deno.readTextFile(pubkeyPath));
  const trustedPath = stringFlag(flags, "trusted-checkpoint");
  const trusted = trustedPath === undefined ? undefined : await Deno.readTextFile(trustedPath);
  const keys = await encryptionKeysFromFlag(stringFlag(flags, "encrypt-key"));
  const report = await verifyStore(dir, { verifier, trusted, keys });
  if (flags.values.json) {
    console.log(JSON.stringify(
      report,
      (_, v) => v instanceof Uint8Array ? Array.from(v, (b) => b.toString(16).padStart(2, "0")).join("") : v,
      2,
    ));
  } else console.log(formatVerifyReport(dir, report));
  return report.ok ? 0 : 1;
}
