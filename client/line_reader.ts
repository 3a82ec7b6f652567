/**
 * Reading JSON lines from files or stdin in large chunks, with the source and
 * line number of every line, and validation of each line as a JSON object.
 *
 * @module
 */
import { InvalidEntryError, parseEntry } from "../shared/json_entry.ts";

/** Lines read from one place of one source. */
export interface LineChunk {
  /** File name, or `<stdin>`. */
  source: string;
  /** Line number (1-based) of `lines[0]`. */
  firstLine: number;
  lines: string[];
  /** Byte offset in the stream just after the last of `lines` (resume reading there). */
  endOffset: number;
}

/** Options for {@linkcode readLineChunks}. */
export interface ReadLineOptions {
  /** Line number of the first line in the stream. Default 1. */
  firstLine?: number;
  /** Byte offset the stream starts at (it was seeked there). Default 0. */
  offset?: number;
}

const CHUNK_BYTES = 4 << 20;

/**
 * Yields the lines of `stream` in chunks, without their line terminators
 * (`\n` or `\r\n`). A last line without a terminator is yielded too.
 */
export async function* readLineChunks(
  stream: ReadableStream<Uint8Array>,
  source: string,
  options: ReadLineOptions = {},
): AsyncGenerator<LineChunk> {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let carry = "";
  let lineNo = options.firstLine ?? 1;
  let bytesRead = options.offset ?? 0;
  const reader = stream.getReader({ mode: "byob" });
  let buffer = new ArrayBuffer(CHUNK_BYTES);
  try {
    while (true) {
      const { value, done } = await reader.read(new Uint8Array(buffer));
      if (done) break;
      buffer = value.buffer as ArrayBuffer;
      bytesRead += value.length;
      const text = carry + decoder.decode(value, { stream: true });
      const lines = text.split("\n");
      carry = lines.pop()!;
      if (lines.length === 0) continue;
      for (let i = 0; i < lines.length; i++) {
        const l = lines[i]!;
        if (l.endsWith("\r")) lines[i] = l.slice(0, -1);
      }
      // The carried partial line is what is not consumed yet.
      yield { source, firstLine: lineNo, lines, endOffset: bytesRead - encoder.encode(carry).length };
      lineNo += lines.length;
    }
    carry += decoder.decode();
    if (carry.endsWith("\r")) carry = carry.slice(0, -1);
    if (carry.length > 0) yield { source, firstLine: lineNo, lines: [carry], endOffset: bytesRead };
  } finally {
    reader.releaseLock();
  }
}

/** A line that is not a JSON object. */
export interface InvalidLine {
  source: string;
  line: number;
  reason: string;
}

/** Raised by `--on-invalid fail` at the first invalid line. */
export class InvalidInputError extends Error {
  override name = "InvalidInputError";
  /** @param invalid where and why */
  constructor(readonly invalid: InvalidLine) {
    super(`${invalid.source}:${invalid.line}: ${invalid.reason}`);
  }
}

/** Valid entries of a chunk, trimmed, with their line numbers. */
export interface EntryChunk {
  source: string;
  entries: string[];
  lineNos: number[];
  /** Blank lines passed over. */
  blank: number;
  /** The invalid line at which selection stopped, when the handler said "stop". */
  stoppedAt?: InvalidLine;
}

/**
 * How much of each line the sender checks: `full` parses it as JSON (needed
 * to stop at the first bad line); `shape` only checks that it is wrapped in
 * braces, leaving the full check to the collector, which reports refused
 * entries by index (so by file and line) in its ack.
 */
export type Validation = "full" | "shape";

/**
 * Keeps the lines of `chunk` that are JSON objects. Blank lines are counted
 * and passed over; every other line is reported to `onInvalid`, which returns
 * "stop" to end the selection there (the entries before it are kept).
 */
export function selectEntries(
  chunk: LineChunk,
  onInvalid: (invalid: InvalidLine) => "stop" | void,
  validation: Validation = "full",
): EntryChunk {
  const entries: string[] = [];
  const lineNos: number[] = [];
  let blank = 0;
  for (let i = 0; i < chunk.lines.length; i++) {
    const text = chunk.lines[i]!.trim();
    if (text.length === 0) {
      blank++;
      continue;
    }
    try {
      // A full parse costs a quarter of the sender's time; the shape check lets the rare bad line
      // through to the collector, which refuses it and names it.
      if (validation === "full" || text.charCodeAt(0) !== 0x7b || text.charCodeAt(text.length - 1) !== 0x7d) {
        parseEntry(text);
      }
    } catch (err) {
      if (!(err instanceof InvalidEntryError)) throw err;
      const invalid = { source: chunk.source, line: chunk.firstLine + i, reason: err.message };
      if (onInvalid(invalid) === "stop") return { source: chunk.source, entries, lineNos, blank, stoppedAt: invalid };
      continue;
    }
    entries.push(text);
    lineNos.push(chunk.firstLine + i);
  }
  return { source: chunk.source, entries, lineNos, blank };
}
