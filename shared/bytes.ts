/**
 * Byte helpers both ends use: writing a whole buffer to something that may
 * take only part of it per call, and joining buffers.
 *
 * @module
 */

/** Writes all of `data` to a file, connection or stdout (anything whose `write` may take only a part). */
export async function writeAll(writer: { write(p: Uint8Array): Promise<number> }, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await writer.write(data.subarray(off));
}

/** The parts one after another, in a new buffer. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
