/**
 * `tlslog cat DATA_DIR`: prints stored entries in write order, across plain,
 * compressed and encrypted files.
 *
 * @module
 */
import type { EncryptionKey } from "../server/sealed_file.ts";
import { writeAll } from "../shared/bytes.ts";
import { listStoreFiles, readStoreFile } from "../server/store_files.ts";
import { type CommandSpec, formatHelp, parseFlags, stringFlag, UsageError } from "./flags.ts";
import { encryptionKeysFromFlag } from "./verify.ts";

/** The command's flags and help. */
export const catSpec: CommandSpec = {
  name: "cat",
  summary: "Print the stored entries of a data directory in write order (plain, compressed and encrypted files).",
  usage: "tlslog cat [flags] DATA_DIR",
  positionals: true,
  flags: {
    since: {
      type: "string",
      arg: "time",
      help: "only entries whose timestamp (timestamp, time, ts or @timestamp field) is at or after this ISO time",
    },
    until: { type: "string", arg: "time", help: "only entries whose timestamp is before this ISO time" },
    grep: { type: "string", arg: "regex", help: "only lines matching this regular expression" },
    "encrypt-key": { type: "string", arg: "file[,file]", help: "key(s) of encrypted files" },
  },
  examples: [
    "tlslog cat ./data --since 2026-11-22T00:00:00Z --grep cardiology",
    "tlslog cat /var/lib/tlslog --encrypt-key at-rest.key | jq .",
  ],
};

const TIME_FIELDS = ["timestamp", "time", "ts", "@timestamp"];

/** An entry's time in ms, from its first time field that parses, or null. */
export function entryTime(line: string): number | null {
  let entry: unknown;
  try {
    entry = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof entry !== "object" || entry === null) return null;
  for (const field of TIME_FIELDS) {
    const v = (entry as Record<string, unknown>)[field];
    const ms = typeof v === "string" ? Date.parse(v) : typeof v === "number" ? v : NaN;
    if (Number.isFinite(ms)) return ms;
  }
  return null;
}

function timeFlag(text: string | undefined, name: string): number | null {
  if (text === undefined) return null;
  const ms = Date.parse(text);
  if (!Number.isFinite(ms)) {
    throw new UsageError(`--${name} must be an ISO time like 2026-11-22T09:00:00Z, got "${text}"`, "cat");
  }
  return ms;
}

/** Runs `tlslog cat`; resolves to the exit code. */
export async function runCat(args: string[]): Promise<number> {
  const flags = parseFlags(catSpec, args);
  if (flags.help) {
    console.log(formatHelp(catSpec));
    return 0;
  }
  if (flags.positionals.length !== 1) throw new UsageError("needs exactly one DATA_DIR", "cat");
  const dir = flags.positionals[0]!;
  if (!(await Deno.stat(dir).catch(() => null))?.isDirectory) throw new UsageError(`no directory ${dir}`, "cat");
  const since = timeFlag(stringFlag(flags, "since"), "since");
  const until = timeFlag(stringFlag(flags, "until"), "until");
  const grepText = stringFlag(flags, "grep");
  let grep: RegExp | null = null;
  try {
    grep = grepText === undefined ? null : new RegExp(grepText);
  } catch (err) {
    throw new UsageError(`--grep is not a valid regular expression: ${(err as Error).message}`, "cat");
  }
  const keys = await encryptionKeysFromFlag(stringFlag(flags, "encrypt-key"));
  try {
    await printEntries(dir, keys, since, until, grep);
  } catch (err) {
    if (!(err instanceof StdoutClosed)) throw err;
  }
  return 0;
}

async function printEntries(
  dir: string,
  keys: EncryptionKey[],
  since: number | null,
  until: number | null,
  grep: RegExp | null,
): Promise<void> {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  for (const set of await listStoreFiles(dir)) {
    if (!set.data) continue;
    const data = await readStoreFile(dir, set.data, keys);
    if (since === null && until === null && grep === null) {
      await writeOut(data);
      continue;
    }
    let out = "";
    for (const line of decoder.decode(data).split("\n")) {
      if (line === "" || (grep && !grep.test(line))) continue;
      if (since !== null || until !== null) {
        const t = entryTime(line);
        if (t === null || (since !== null && t < since) || (until !== null && t >= until)) continue;
      }
      out += line + "\n";
    }
    await writeOut(encoder.encode(out));
  }
}

/** Raised to stop quietly when the reader of stdout went away (`tlslog cat … | head`). */
class StdoutClosed extends Error {
  override name = "StdoutClosed";
}

async function writeOut(bytes: Uint8Array): Promise<void> {
  try {
    await writeAll(Deno.stdout, bytes);
  } catch (err) {
    if (err instanceof Deno.errors.BrokenPipe) throw new StdoutClosed();
    throw err;
  }
}
