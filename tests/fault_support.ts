/**
 * Helpers for the fault tests (server killed, server down, connections cut):
 * an input file of numbered entries, `tlslog` children that can be killed,
 * bounded waits, and the exactly-once check of what was stored.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { isCompressedName, listDataFiles, readStoreFile } from "../server/store_files.ts";
import { ROOT, type RunResult } from "./test_support.ts";
import { seededRandom } from "../client/healthcare_source.ts";

/** Raised when something awaited did not happen in time. */
export class WaitTimeoutError extends Error {
  override name = "WaitTimeoutError";
  /** @param what the awaited event, @param timeoutMs how long it was given */
  constructor(readonly what: string, readonly timeoutMs: number) {
    super(`${what} did not happen within ${timeoutMs} ms`);
  }
}

/** A port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Checks `condition` every `intervalMs` until it holds; throws
 * {@linkcode WaitTimeoutError} after `timeoutMs`. For events only visible
 * from outside, such as a file growing in another process.
 */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  intervalMs = 25,
): Promise<void> {
  const started = performance.now();
  while (!(await condition())) {
    if (performance.now() - started > timeoutMs) throw new WaitTimeoutError(what, timeoutMs);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Resolves with `promise`, or rejects with {@linkcode WaitTimeoutError} after `timeoutMs`. */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeoutError(what, timeoutMs)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A temporary directory, removed with everything in it on dispose. */
export interface TempDir {
  path: string;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Makes a temporary directory for `await using`. */
export async function tempDir(prefix: string): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** Options for {@linkcode writeEntries}. */
export interface WriteEntriesOptions {
  /** Characters of pseudo-random hex in each entry (hard to compress). Default 64. */
  payloadChars?: number;
  /** Seed of the payload. Default 1. */
  seed?: number;
}

/**
 * Writes `count` entries `{"id":<i>,"data":"<hex>"}` with ids 0..count-1 to
 * `path`, one per line. Every line has the same length (the payload is one
 * character shorter for each extra digit of the id), so the bytes stored say
 * how many entries were stored. Returns that length, newline included.
 */
export async function writeEntries(path: string, count: number, options: WriteEntriesOptions = {}): Promise<number> {
  const payloadChars = options.payloadChars ?? 64;
  const digits = String(count - 1).length;
  if (payloadChars < digits) throw new RangeError(`payloadChars must be at least ${digits}, got ${payloadChars}`);
  const random = seededRandom(options.seed ?? 1);
  const hex = (n: number) => Array.from({ length: n }, () => Math.floor(random() * 16).toString(16)).join("");
  const lines: string[] = [];
  for (let id = 0; id < count; id++) {
    lines.push(JSON.stringify({ id, data: hex(payloadChars - String(id).length) }));
  }
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  return lines[0]!.length + 1;
}

/** Plain sizes of compressed files, which never change once renamed into place. */
const compressedSizes = new Map<string, number>();

/** Total plain size of the data files in `dataDir` (0 when it does not exist yet). */
export async function storedBytes(dataDir: string): Promise<number> {
  let total = 0;
  let names: string[];
  try {
    names = await listDataFiles(dataDir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
  for (const name of names) {
    try {
      if (isCompressedName(name)) {
        const key = join(dataDir, name);
        let size = compressedSizes.get(key);
        if (size === undefined) compressedSizes.set(key, size = (await readStoreFile(dataDir, name)).length);
        total += size;
        continue;
      }
      total += (await Deno.stat(join(dataDir, name))).size;
    } catch (err) {
      // Recovery may remove a file between the listing and the stat.
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return total;
}

/** Complete lines (newlines) in the data files of `dataDir`; a torn last line is not counted. */
export async function countStoredLines(dataDir: string): Promise<number> {
  let lines = 0;
  for (const name of await listDataFiles(dataDir)) {
    const data = await readStoreFile(dataDir, name);
    for (let at = data.indexOf(0x0a); at !== -1; at = data.indexOf(0x0a, at + 1)) lines++;
  }
  return lines;
}

/** How the stored ids compare with 0..total-1, each exactly once. */
export interface DeliveryReport {
  stored: number;
  distinct: number;
  missing: number;
  duplicated: number;
  /** Ids that are not integers in [0, total). */
  unexpected: number;
  /** Up to 10 examples of each problem. */
  examples: { missing: number[]; duplicated: number[]; unexpected: unknown[] };
}

/** Counts missing, duplicated and unexpected ids among `ids` for ids 0..total-1. */
export function deliveryReport(ids: readonly unknown[], total: number): DeliveryReport {
  const seen = new Uint32Array(total);
  const unexpected: unknown[] = [];
  for (const id of ids) {
    if (typeof id === "number" && Number.isInteger(id) && id >= 0 && id < total) seen[id]!++;
    else unexpected.push(id);
  }
  const missing: number[] = [];
  const duplicated: number[] = [];
  let distinct = 0;
  for (let id = 0; id < total; id++) {
    if (seen[id] === 0) missing.push(id);
    else distinct++;
    if (seen[id]! > 1) duplicated.push(id);
  }
  return {
    stored: ids.length,
    distinct,
    missing: missing.length,
    duplicated: duplicated.length,
    unexpected: unexpected.length,
    examples: {
      missing: missing.slice(0, 10),
      duplicated: duplicated.slice(0, 10),
      unexpected: unexpected.slice(0, 10),
    },
  };
}

/** Asserts that `ids` holds every id in 0..total-1 exactly once and nothing else. */
export function assertExactlyOnce(ids: readonly unknown[], total: number): void {
  assert.deepStrictEqual(deliveryReport(ids, total), {
    stored: total,
    distinct: total,
    missing: 0,
    duplicated: 0,
    unexpected: 0,
    examples: { missing: [], duplicated: [], unexpected: [] },
  });
}

/** A running `tlslog` child process. */
export interface TlslogProcess {
  child: Deno.ChildProcess;
  /** Settles with the exit code and output once the child has exited. */
  output: Promise<RunResult>;
  /** Kills the child if it still runs and waits for it. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts `deno run -A main.ts ...args` without waiting for it. */
export function spawnTlslog(args: string[]): TlslogProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "main.ts"), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const decoder = new TextDecoder();
  const output = child.output().then((out) => ({
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  }));
  return {
    child,
    output,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already exited
      }
      await output;
    },
  };
}
