/**
 * Zero-loss check of a benchmark run: the files hold every entry `seq`
 * 1..expected exactly once and nothing else.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { listDataFiles, readStoreText } from "../server/store_files.ts";

/** What the files held. */
export interface Stored {
  lines: number;
  files: number;
  /** Every seq in 1..expected present exactly once, nothing else. */
  exact: boolean;
}

/** Checks the JSON lines of `paths` (each line an object with a numeric `seq`). */
export async function checkSeqs(paths: string[], expected: number): Promise<Stored> {
  const seen = new Uint8Array(expected + 1);
  let lines = 0;
  let exact = true;
  for (const path of paths) {
    const text = await readStoreText(dirname(path), basename(path));
    for (const line of text.split("\n")) {
      if (line === "") continue;
      lines++;
      let seq: unknown;
      try {
        seq = (JSON.parse(line) as { seq?: unknown }).seq;
      } catch {
        exact = false;
        continue;
      }
      if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 1 || seq > expected || seen[seq]) exact = false;
      else seen[seq] = 1;
    }
  }
  return { lines, files: paths.length, exact: exact && lines === expected };
}

/** Checks the data files (`tlslog-<n>.jsonl`, compressed or not) of a collector's data directory. */
export async function verifyStored(dataDir: string, expected: number): Promise<Stored> {
  const paths = (await listDataFiles(dataDir)).map((name) => join(dataDir, name));
  return await checkSeqs(paths, expected);
}
