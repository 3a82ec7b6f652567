/**
 * Flag parsing for the subcommands on node:util `parseArgs` (JSR's @std/cli
 * is out of reach): unknown flags and bad values are {@linkcode UsageError}s
 * that name the flag and point at `--help`.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** A mistake in the command line. main.ts turns it into exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
  /** @param command the subcommand whose help to point at, e.g. "serve" */
  constructor(message: string, readonly command: string) {
    super(message);
  }
}

/** One flag of a subcommand. */
export interface FlagSpec {
  type: "string" | "boolean";
  /** One-line description for --help. */
  help: string;
  /** Default, shown in --help. */
  default?: string | boolean;
  /** Placeholder for the value in --help. */
  arg?: string;
}

/** A subcommand's description, used for parsing and for --help. */
export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  flags: Record<string, FlagSpec>;
  /** Whether the command takes positional arguments. */
  positionals?: boolean;
  /** Examples shown at the end of --help. */
  examples?: string[];
}

/** Parsed flags: strings and booleans by flag name, and positionals. */
export interface ParsedFlags {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  help: boolean;
}

/** Parses `args` for `spec`; `--help`/`-h` is always accepted. */
export function parseFlags(spec: CommandSpec, args: string[]): ParsedFlags {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const [name, flag] of Object.entries(spec.flags)) options[name] = { type: flag.type };
  let parsed;
  try {
    // allowNegative: a boolean flag that defaults to true is turned off with --no-<name>.
    parsed = parseArgs(
      { args, options, strict: true, allowPositionals: true, allowNegative: true } as
        & Parameters<
          typeof parseArgs
        >[0]
        & { options: typeof options },
    );
  } catch (err) {
    const message = (err as Error).message.replace(/\. To specify a positional argument.*$/s, "");
    throw new UsageError(`${message.replace(/^Unknown option/, "unknown flag")}`, spec.name);
  }
  if (parsed.positionals.length > 0 && !spec.positionals && !parsed.values.help) {
    throw new UsageError(`unexpected argument "${parsed.positionals[0]}"`, spec.name);
  }
  const values: ParsedFlags["values"] = {};
  for (const [name, flag] of Object.entries(spec.flags)) {
    values[name] = (parsed.values as Record<string, string | boolean | undefined>)[name] ?? flag.default;
  }
  return { values, positionals: parsed.positionals, help: parsed.values.help === true };
}

/** The --help text of a subcommand. */
export function formatHelp(spec: CommandSpec): string {
  const rows = Object.entries(spec.flags).map(([name, flag]) => {
    const negatable = flag.type === "boolean" && flag.default === true;
    const left = `--${negatable ? "[no-]" : ""}${name}${flag.type === "string" ? ` <${flag.arg ?? "value"}>` : ""}`;
    const def = flag.default !== undefined && flag.default !== false ? ` (default: ${flag.default})` : "";
    return [left, flag.help + def] as const;
  });
  rows.push(["-h, --help", "show this help"]);
  const width = Math.max(...rows.map(([l]) => l.length));
  const lines = [
    `${spec.summary}`,
    "",
    `Usage: ${spec.usage}`,
    "",
    "Flags:",
    ...rows.map(([l, r]) => `  ${l.padEnd(width)}  ${r}`),
  ];
  if (spec.examples?.length) lines.push("", "Examples:", ...spec.examples.map((e) => `  ${e}`));
  return lines.join("\n");
}

/** Reads a string flag, or undefined. */
export function stringFlag(flags: ParsedFlags, name: string): string | undefined {
  const v = flags.values[name];
  return typeof v === "string" ? v : undefined;
}

/** Reads an integer flag within [min, max]. */
export function intFlag(flags: ParsedFlags, spec: CommandSpec, name: string, min: number, max: number): number {
  const raw = stringFlag(flags, name);
  if (raw === undefined) throw new UsageError(`--${name} needs a value`, spec.name);
  const n = /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got "${raw}"`, spec.name);
  }
  return n;
}

/** Parses a size like `1048576`, `512KiB`, `1MiB`, `16M`. */
export function parseSize(text: string): number | null {
  const m = /^(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)$/i.exec(text.trim());
  if (!m) return null;
  const unit = m[2]!.toLowerCase()[0];
  const mult = unit === "k" ? 1024 : unit === "m" ? 1024 ** 2 : unit === "g" ? 1024 ** 3 : 1;
  return Number(m[1]) * mult;
}

/** Reads a size flag (bytes, or with KiB/MiB/GiB) within [min, max]. */
export function sizeFlag(flags: ParsedFlags, spec: CommandSpec, name: string, min: number, max: number): number {
  const raw = stringFlag(flags, name) ?? "";
  const n = parseSize(raw);
  if (n === null || n < min || n > max) {
    throw new UsageError(`--${name} must be a size from ${min} to ${max} bytes (e.g. 1MiB), got "${raw}"`, spec.name);
  }
  return n;
}

/** Parses a duration like `3s`, `500ms`, `2m`, or plain seconds `30`. Returns milliseconds. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return null;
  const n = Number(m[1]);
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"]!;
  return Math.round(n * mult);
}

/** Reads a duration flag in milliseconds within [minMs, maxMs]. */
export function durationFlag(
  flags: ParsedFlags,
  spec: CommandSpec,
  name: string,
  minMs: number,
  maxMs: number,
): number {
  const raw = stringFlag(flags, name) ?? "";
  const ms = parseDuration(raw);
  if (ms === null || ms < minMs || ms > maxMs) {
    throw new UsageError(
      `--${name} must be a duration from ${minMs} ms to ${maxMs / 1000} s (e.g. 3s, 500ms), got "${raw}"`,
      spec.name,
    );
  }
  return ms;
}

/** Reads a flag restricted to `choices`. */
export function choiceFlag<T extends string>(
  flags: ParsedFlags,
  spec: CommandSpec,
  name: string,
  choices: readonly T[],
): T {
  const raw = stringFlag(flags, name);
  if (raw === undefined || !(choices as readonly string[]).includes(raw)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got "${raw}"`, spec.name);
  }
  return raw as T;
}
