/**
 * The hash chain over stored entries and its per-file record, the chain file.
 *
 * Every stored entry i (counted from 1 across all data files, across
 * rotations and restarts) is linked to the one before:
 *
 *     h_0 = 32 zero bytes
 *     h_i = SHA-256(h_{i-1} || bytes of entry i)
 *
 * where the bytes of an entry are its stored JSON line exactly as it is in
 * the data file, without the newline (the collector stores what the sender
 * sent, so the stored line is the canonical form). A signed checkpoint of
 * (size, head) then pins every entry before it.
 *
 * Each data file `tlslog-00000007.jsonl` has a chain file
 * `tlslog-00000007.chain`: a header line naming the file and the chain state
 * before its first entry, then one line `<seq> <hex hash>` per entry:
 *
 *     {"chain":1,"file":7,"prev_seq":60,"prev":"<64 hex>"}
 *     61 3b0f…
 *     62 a91c…
 *
 * The chain file lets `tlslog verify` say which line was edited, inserted,
 * deleted or swapped; it holds hashes only, never entry content, and is not
 * encrypted.
 *
 * @module
 */
import { hash } from "node:crypto";

/** The chain's position: entries so far and the hash of the last. */
export interface ChainState {
  /** Number of entries chained (the sequence number of the last). */
  seq: number;
  /** h_seq; 32 zero bytes when seq is 0. */
  head: Uint8Array;
}

/** h_0. */
export const GENESIS: Uint8Array = new Uint8Array(32);

/** The state of an empty chain. */
export function genesisState(): ChainState {
  return { seq: 0, head: GENESIS };
}

/** Raised for a chain file that cannot be read at all. */
export class ChainFormatError extends Error {
  override name = "ChainFormatError";
}

let scratch = new Uint8Array(4096);
/** Views of scratch[0..n) by n. */
const views = new Map<number, Uint8Array>();

/** Value of each ASCII hex digit (lowercase), for decoding digests without allocating. */
const HEX_VALUE = new Uint8Array(128);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[97 + i] = 10 + i;
/** The same, with 255 for every character that is not a lowercase hex digit. */
const HEX_DIGIT = new Uint8Array(128).fill(255);
for (let i = 0; i < 10; i++) HEX_DIGIT[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_DIGIT[97 + i] = 10 + i;

/**
 * Hashes `prev || data[start..end)` where `prev` is already in scratch[0..32);
 * leaves the digest in scratch[0..32) and returns it as hex. node:crypto's
 * one-shot `hash` with hex output is the fastest SHA-256 here: a Buffer result
 * costs more than decoding 64 hex digits by hand.
 */
function stepInScratch(data: Uint8Array, start: number, end: number): string {
  const total = 32 + end - start;
  if (scratch.length < total) {
    const bigger = new Uint8Array(Math.max(total, scratch.length * 2));
    bigger.set(scratch.subarray(0, 32));
    scratch = bigger;
    views.clear();
  }
  scratch.set(data.subarray(start, end), 32);
  // Entries of a stream have few distinct lengths: reusing the view of each length saves an allocation per entry.
  let view = views.get(total);
  if (view === undefined) {
    if (views.size >= 4096) views.clear();
    view = scratch.subarray(0, total);
    views.set(total, view);
  }
  const hex = hash("sha256", view, "hex");
  for (let i = 0; i < 32; i++) {
    scratch[i] = (HEX_VALUE[hex.charCodeAt(2 * i)]! << 4) | HEX_VALUE[hex.charCodeAt(2 * i + 1)]!;
  }
  return hex;
}

/**
 * h = SHA-256(prev || data[start..end)), for one entry at a time (verify's
 * line-by-line check). Kept apart from chainLines' loop, which stays the only
 * caller of its scratch buffer and runs faster for it.
 */
export function chainStep(prev: Uint8Array, data: Uint8Array, start = 0, end = data.length): Uint8Array {
  const message = new Uint8Array(32 + end - start);
  message.set(prev, 0);
  message.set(data.subarray(start, end), 32);
  return new Uint8Array(hash("sha256", message, "buffer") as unknown as Uint8Array);
}

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of a 64-char hex hash, or null when it is not one. */
export function fromHex(text: string): Uint8Array | null {
  return text.length === 64 ? hexAt(text, 0) : null;
}

/** The 32 bytes of the 64 lowercase hex digits of `text` at `at`, or null when any is not one. */
function hexAt(text: string, at: number): Uint8Array | null {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) {
    const hi = HEX_DIGIT[text.charCodeAt(at + 2 * i)] ?? 255;
    const lo = HEX_DIGIT[text.charCodeAt(at + 2 * i + 1)] ?? 255;
    if ((hi | lo) > 15) return null;
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/** Whether two hashes are equal. */
export function sameHash(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const NEWLINE = 0x0a;

/**
 * Chains the newline-terminated lines of `data` onto `state`. Returns the new
 * state and the chain-file lines for them.
 */
export function chainLines(state: ChainState, data: Uint8Array): { state: ChainState; records: string } {
  let seq = state.seq;
  const records: string[] = [];
  scratch.set(state.head, 0);
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(NEWLINE, start);
    if (end === -1) end = data.length;
    const hex = stepInScratch(data, start, end);
    seq++;
    records.push(seq + " " + hex + "\n");
    start = end + 1;
  }
  return { state: { seq, head: seq === state.seq ? state.head : scratch.slice(0, 32) }, records: records.join("") };
}

/** The lines of `data`, without their newlines (a last line without one included). */
export function splitLines(data: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(NEWLINE, start);
    if (end === -1) end = data.length;
    out.push(data.subarray(start, end));
    start = end + 1;
  }
  return out;
}

/** Name of the chain file of data file number `index`. */
export function chainFileName(index: number): string {
  return `tlslog-${String(index).padStart(8, "0")}.chain`;
}

/** The header line of a chain file. */
export function formatChainHeader(file: number, prev: ChainState): string {
  return JSON.stringify({ chain: 1, file, prev_seq: prev.seq, prev: toHex(prev.head) }) + "\n";
}

/** One entry's record in a chain file. */
export interface ChainRecord {
  seq: number;
  hash: Uint8Array;
  /** 1-based line of the chain file. */
  line: number;
}

/** A parsed chain file. */
export interface ChainFile {
  /** Data file number the header names. */
  file: number;
  /** Chain state before the file's first entry. */
  prev: ChainState;
  records: ChainRecord[];
  /** Lines that are not records (1-based line numbers), e.g. edited into garbage. */
  malformed: number[];
  /** Whether the last line was cut short (no newline). */
  torn: boolean;
}

/**
 * Parses chain-file text.
 *
 * @throws {ChainFormatError} when the header is missing or unreadable
 */
export function parseChainFile(text: string, name: string): ChainFile {
  const lines = text.split("\n");
  const torn = lines.at(-1) !== "";
  if (!torn) lines.pop();
  const { file, prev } = parseChainHeader(lines[0] ?? "", name);
  const records: ChainRecord[] = [];
  const malformed: number[] = [];
  const last = torn ? lines.length - 1 : lines.length;
  for (let i = 1; i < last; i++) {
    // `<seq> <64 hex>`, parsed by hand: a regular expression per record made verify twice as slow.
    const line = lines[i]!;
    const space = line.indexOf(" ");
    const digits = line.slice(0, space);
    const seq = Number(digits);
    const hash = space > 0 && space <= 15 && line.length === space + 65 ? hexAt(line, space + 1) : null;
    if (hash === null || !Number.isSafeInteger(seq) || String(seq) !== digits) {
      malformed.push(i + 1);
      continue;
    }
    records.push({ seq, hash, line: i + 1 });
  }
  return { file, prev, records, malformed, torn };
}

/**
 * Parses a chain file's header line.
 *
 * @throws {ChainFormatError} when it is not one
 */
export function parseChainHeader(line: string, name: string): { file: number; prev: ChainState } {
  let header: { chain?: unknown; file?: unknown; prev_seq?: unknown; prev?: unknown } | null;
  try {
    header = JSON.parse(line);
  } catch {
    throw new ChainFormatError(`${name} line 1: not a chain-file header`);
  }
  const prevHash = typeof header?.prev === "string" ? fromHex(header.prev) : null;
  if (
    typeof header !== "object" || header === null || header.chain !== 1 || !Number.isSafeInteger(header.file) ||
    !Number.isSafeInteger(header.prev_seq) ||
    (header.prev_seq as number) < 0 || prevHash === null
  ) {
    throw new ChainFormatError(
      `${name} line 1: not a chain-file header (want {"chain":1,"file":…,"prev_seq":…,"prev":…})`,
    );
  }
  return { file: header.file as number, prev: { seq: header.prev_seq as number, head: prevHash } };
}
