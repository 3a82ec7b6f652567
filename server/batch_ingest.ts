/**
 * Turns a decompressed v2 batch body into the bytes to store: every line must
 * be a JSON object of at most `maxEntryBytes`; lines that are not are refused
 * one by one and the rest is kept.
 *
 * @module
 */
import { type Entry, InvalidEntryError, parseEntry } from "../shared/json_entry.ts";
import type { EntryRejection } from "../shared/protocol.ts";
import { carriesProvenance, PROVENANCE_REFUSAL, stampLine } from "./provenance.ts";

/** Raised when a batch cannot be read at all. */
export class BatchFormatError extends Error {
  override name = "BatchFormatError";
  /** @param code reason key for the refusal counters */
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** What to store of a batch, and what was refused. */
export interface IngestedBatch {
  /** Newline-terminated JSON lines to append. */
  data: Uint8Array;
  /** Lines in `data`. */
  count: number;
  rejected: (EntryRejection & { code: string })[];
  /** With `keepEntries`: the valid entries, as line, parsed value and index in the batch. */
  entries?: { index: number; line: string; entry: Entry }[];
}

// ignoreBOM keeps a byte-order mark in the text, so that a line starting with one is refused as not JSON
// instead of passing (the mark dropped) and being stored with it.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/**
 * Validates a batch body of `expected` newline-terminated JSON objects. An
 * entry that sets the collector's provenance field is refused; with `stamp`
 * (a provenance member, see provenance.ts) every stored line gets it. The
 * kept `entries` are the lines as sent, unstamped.
 *
 * @throws {BatchFormatError} when the body is not UTF-8, or its line count differs from the header
 */
export function ingestBatch(
  body: Uint8Array,
  expected: number,
  maxEntryBytes: number,
  keepEntries = false,
  stamp?: string,
): IngestedBatch {
  let text: string;
  try {
    text = decoder.decode(body);
  } catch {
    throw new BatchFormatError("bad_utf8", "batch body is not valid UTF-8");
  }
  if (text.length > 0 && !text.endsWith("\n")) {
    throw new BatchFormatError("bad_batch", "batch body must end with a newline");
  }
  const lines = text.length === 0 ? [] : text.slice(0, -1).split("\n");
  if (lines.length !== expected) {
    throw new BatchFormatError("bad_batch", `batch header says ${expected} entries, body holds ${lines.length} lines`);
  }
  const rejected: IngestedBatch["rejected"] = [];
  // Only the privacy check needs the parsed entries; without it they are not kept.
  const entries: IngestedBatch["entries"] = keepEntries ? [] : undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    // Length in UTF-16 units is a lower bound on bytes; only measure when close.
    if (line.length * 3 > maxEntryBytes && encoder.encode(line).length > maxEntryBytes) {
      rejected.push({ index: i, code: "entry_too_large", error: `entry exceeds max-entry-bytes ${maxEntryBytes}` });
      continue;
    }
    try {
      const entry = parseEntry(line);
      if (carriesProvenance(entry)) {
        rejected.push({ index: i, code: "reserved_field", error: PROVENANCE_REFUSAL });
        continue;
      }
      entries?.push({ index: i, line, entry });
    } catch (err) {
      if (!(err instanceof InvalidEntryError)) throw err;
      rejected.push({ index: i, code: "invalid_entry", error: err.message });
    }
  }
  const kept = entries ? { entries } : {};
  if (rejected.length === 0 && stamp === undefined) return { data: body, count: lines.length, rejected, ...kept };
  const skip = new Set(rejected.map((r) => r.index));
  let valid = rejected.length === 0 ? lines : lines.filter((_, i) => !skip.has(i));
  if (stamp !== undefined) valid = valid.map((line) => stampLine(line, stamp));
  return {
    data: valid.length === 0 ? new Uint8Array(0) : encoder.encode(valid.join("\n") + "\n"),
    count: valid.length,
    rejected,
    ...kept,
  };
}
