/**
 * Where the pseudonymisation key comes from: a file, the TLSLOG_ANON_KEY
 * variable, or, with neither, a random key created once (mode 0600).
 *
 * @module
 */
import { dirname, join } from "node:path";
import { parseKey } from "../shared/pseudonymizer.ts";

/** Raised when a key file cannot be read or used. */
export class AnonKeyError extends Error {
  override name = "AnonKeyError";
}

/** A loaded key and where it came from (never the key itself). */
export interface LoadedKey {
  key: Uint8Array;
  /** `file <path>`, `TLSLOG_ANON_KEY`, or `new file <path>`. */
  origin: string;
  /** Set when the key was created by this call. */
  createdPath?: string;
}

/** The default key file: `$XDG_CONFIG_HOME/tlslog/anon.key` or `~/.config/tlslog/anon.key`. */
export function defaultKeyPath(env: { get(name: string): string | undefined } = Deno.env): string {
  const base = env.get("XDG_CONFIG_HOME") ?? join(env.get("HOME") ?? ".", ".config");
  return join(base, "tlslog", "anon.key");
}

function readKeyFile(path: string): Uint8Array {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    throw new AnonKeyError(`cannot read anonymisation key ${path}: ${(err as Error).message}`);
  }
  try {
    return parseKey(text);
  } catch (err) {
    throw new AnonKeyError(`anonymisation key ${path}: ${(err as Error).message}`);
  }
}

/**
 * Loads the key: `keyFile` first, then `envKey`, then `defaultPath`,
 * creating a random 32-byte key there (mode 0600) when it does not exist.
 */
export function loadAnonKey(keyFile: string | undefined, envKey: string | undefined, defaultPath: string): LoadedKey {
  if (keyFile) return { key: readKeyFile(keyFile), origin: `file ${keyFile}` };
  if (envKey) {
    try {
      return { key: parseKey(envKey), origin: "TLSLOG_ANON_KEY" };
    } catch (err) {
      throw new AnonKeyError(`TLSLOG_ANON_KEY: ${(err as Error).message}`);
    }
  }
  try {
    return { key: readKeyFile(defaultPath), origin: `file ${defaultPath}` };
  } catch (err) {
    if (!(err instanceof AnonKeyError) || !/No such file|not found/i.test(err.message)) throw err;
  }
  const key = crypto.getRandomValues(new Uint8Array(32));
  const hex = Array.from(key, (b) => b.toString(16).padStart(2, "0")).join("");
  Deno.mkdirSync(dirname(defaultPath), { recursive: true, mode: 0o700 });
  Deno.writeTextFileSync(defaultPath, hex + "\n", { createNew: true, mode: 0o600 });
  return { key, origin: `new file ${defaultPath}`, createdPath: defaultPath };
}
