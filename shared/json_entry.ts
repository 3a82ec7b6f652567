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

/**
 * Parses `text` as one JSON object.
 *
 * @throws {InvalidEntryError} naming why: not JSON, or JSON that is not an object
 */
export function parseEntry(text: string): Entry {
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
