/**
 * The files of a data directory and how to read them, whatever state they
 * are in. Data file number N goes through these names:
 *
 * | name                        | when                                                   |
 * | --------------------------- | ------------------------------------------------------ |
 * | `tlslog-0000000N.jsonl`     | being written, or closed (compression off or pending)  |
 * | `tlslog-0000000N.jsonl.enc` | the same, encrypted (`--encrypt-key`)                   |
 * | `tlslog-0000000N.jsonl.gz`  | closed and compressed (`--compress-rotated`)           |
 * | `tlslog-0000000N.jsonl.gz.enc` | closed, compressed, then encrypted                  |
 *
 * and its chain file `tlslog-0000000N.chain` (`.chain.gz` once compressed).
 * A compressed file is renamed into place only once complete, so when both
 * `….jsonl` and `….jsonl.gz` exist (a crash between the rename and removing
 * the original) the compressed one is the file and the other a leftover.
 *
 * @module
 */
import { join } from "node:path";
import { gunzip } from "node:zlib";
import { promisify } from "node:util";
import { type EncryptionKey, unseal } from "./sealed_file.ts";

const gunzipAsync = promisify(gunzip);

const STORE_FILE = /^tlslog-(\d{8,})\.(jsonl|chain)(\.gz)?(\.enc)?$/;

/** Raised when a stored file cannot be read (damaged compression, unknown name). */
export class StoreFileError extends Error {
  override name = "StoreFileError";
}

/** The files of one data-file number. */
export interface StoreFileSet {
  index: number;
  /** Name of the data file, or null when it is missing. */
  data: string | null;
  /** Name of the chain file, or null when it is missing. */
  chain: string | null;
  /** Superseded copies (an original left next to its compressed file). */
  leftovers: string[];
}

/** Name of data file number `index` in the given form. */
export function dataFileName(index: number, form: { gz?: boolean; enc?: boolean } = {}): string {
  return `tlslog-${String(index).padStart(8, "0")}.jsonl${form.gz ? ".gz" : ""}${form.enc ? ".enc" : ""}`;
}

/** Number of a store file's name, or null when the name is not one. */
export function storeFileIndex(name: string): number | null {
  const m = STORE_FILE.exec(name);
  return m ? Number(m[1]) : null;
}

/** Whether `name` is a compressed file. */
export function isCompressedName(name: string): boolean {
  return /\.gz(\.enc)?$/.test(name);
}

/** The name `name` has once compressed. */
export function compressedName(name: string): string {
  return name.endsWith(".enc") ? name.slice(0, -4) + ".gz.enc" : name + ".gz";
}

/** Whether `name` is an encrypted file. */
export function isEncryptedName(name: string): boolean {
  return name.endsWith(".enc");
}

/** The data and chain files of `dir`, by number, in write order. */
export async function listStoreFiles(dir: string): Promise<StoreFileSet[]> {
  const byIndex = new Map<number, { data: string[]; chain: string[] }>();
  for await (const e of Deno.readDir(dir)) {
    const m = e.isFile ? STORE_FILE.exec(e.name) : null;
    if (!m) continue;
    const index = Number(m[1]);
    const set = byIndex.get(index) ?? { data: [], chain: [] };
    byIndex.set(index, set);
    (m[2] === "jsonl" ? set.data : set.chain).push(e.name);
  }
  return [...byIndex.entries()].sort(([a], [b]) => a - b).map(([index, set]) => {
    // The compressed form is renamed into place only when complete: it wins.
    const pick = (names: string[]) => names.sort((a, b) => Number(isCompressedName(b)) - Number(isCompressedName(a)));
    const data = pick(set.data);
    const chain = pick(set.chain);
    return {
      index,
      data: data[0] ?? null,
      chain: chain[0] ?? null,
      leftovers: [...data.slice(1), ...chain.slice(1)],
    };
  });
}

/** Names of the data files of `dir` in write order (one per number). */
export async function listDataFiles(dir: string): Promise<string[]> {
  return (await listStoreFiles(dir)).flatMap((s) => s.data ? [s.data] : []);
}

/**
 * The plain content of a stored file: decrypted (with one of `keys`) and
 * decompressed as its name says.
 *
 * @throws {StoreFileError} for a damaged compressed stream
 * @throws {import("./sealed_file.ts").EncryptionKeyError} when no key given fits an encrypted file
 * @throws {import("./sealed_file.ts").SealedFileError} when an encrypted file was altered
 */
export async function readStoreFile(
  dir: string,
  name: string,
  keys: readonly EncryptionKey[] = [],
): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(join(dir, name));
  } catch (err) {
    // Compressed since it was listed: read the compressed form.
    if (!(err instanceof Deno.errors.NotFound) || isCompressedName(name)) throw err;
    return readStoreFile(dir, compressedName(name), keys);
  }
  if (isEncryptedName(name)) bytes = await unseal(bytes, keys, name);
  if (isCompressedName(name)) {
    try {
      bytes = new Uint8Array(await gunzipAsync(bytes));
    } catch (err) {
      throw new StoreFileError(`${name}: damaged gzip data: ${(err as Error).message}`);
    }
  }
  return bytes;
}

/** {@linkcode readStoreFile} as UTF-8 text. */
export async function readStoreText(dir: string, name: string, keys: readonly EncryptionKey[] = []): Promise<string> {
  return new TextDecoder().decode(await readStoreFile(dir, name, keys));
}
