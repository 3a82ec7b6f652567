/**
 * What an entry is: one JSON object. Both ends validate with these rules.
 *
 * @module
 */

/** A log entry: a JSON object. */
export type Entry = Record<string, unknown>;

/** Raised for text that is not a single JSON object. */
export class InvalidEntryError extends Error {
  override name = "InvalidEntryError";
}

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}

/** Deepest nesting of objects and arrays an entry may have. */
export const MAX_ENTRY_DEPTH = 64;

/** Nesting depth of the JSON text's objects and arrays, counted up to `limit + 1` (strings skipped). */
export function jsonDepth(text: string, limit: number): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max && (max = depth) > limit) return max;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

/** How many `{` and `[` the text holds, counted up to `limit + 1`. */
function openers(text: string, limit: number): number {
  let n = 0;
  for (let i = text.indexOf("{"); i !== -1 && n <= limit; i = text.indexOf("{", i + 1)) n++;
  for (let i = text.indexOf("["); i !== -1 && n <= limit; i = text.indexOf("[", i + 1)) n++;
  return n;
}

/**
 * Parses `text` as one JSON object nested at most `maxDepth` deep.
 *
 * @throws {InvalidEntryError} naming why: not JSON, JSON that is not an object, or nested too deep
 */
export function parseEntry(text: string, maxDepth = MAX_ENTRY_DEPTH): Entry {
  // Checked before parsing: deep nesting costs the parser (and anything that walks the entry) stack and time.
  // Few brackets cannot nest deep: counting them (native indexOf) spares most lines the full scan.
  if (text.length > maxDepth && openers(text, maxDepth) > maxDepth && jsonDepth(text, maxDepth) > maxDepth) {
    throw new InvalidEntryError(`nested deeper than ${maxDepth} levels`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidEntryError(`not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidEntryError(`not a JSON object (got ${kindOf(value)})`);
  }
  return value as Entry;
}
