/**
 * gzip with a hard bound on decompressed size. `DecompressionStream` has no
 * output bound (a 194 KB bomb becomes 200 MB in one chunk), so untrusted
 * input goes through node:zlib with `maxOutputLength`.
 *
 * @module
 */
import { constants, createGunzip, gunzipSync, gzipSync } from "node:zlib";

/** Raised when a payload would decompress beyond the allowed size. */
export class DecompressedTooLargeError extends Error {
  override name = "DecompressedTooLargeError";
  /** @param max the decompressed-size limit that was hit */
  constructor(readonly max: number) {
    super(`decompressed size exceeds max ${max} bytes`);
  }
}

/** Raised when a payload is not valid gzip. */
export class GzipFormatError extends Error {
  override name = "GzipFormatError";
}

/** Compresses `data` as gzip (RFC 1952). Level 1 is fastest, 9 smallest. */
export function gzip(data: Uint8Array, level = 1): Uint8Array {
  return asUint8Array(gzipSync(data, { level }));
}

/**
 * Decompresses gzip, refusing to produce more than `maxBytes`.
 *
 * @throws {DecompressedTooLargeError} when the output would exceed `maxBytes`
 * @throws {GzipFormatError} when the input is not valid gzip
 */
export function gunzipBounded(data: Uint8Array, maxBytes: number): Uint8Array {
  try {
    return asUint8Array(gunzipOnce(data, maxBytes));
  } catch (err) {
    if (err instanceof RangeError) throw new DecompressedTooLargeError(maxBytes);
    const message = err instanceof Error ? err.message : String(err);
    throw new GzipFormatError(`payload is not valid gzip: ${message}`);
  }
}

/** The parts of Deno's node:zlib engine that gunzipSync uses inside. */
interface ZlibEngine {
  _processChunk?: (chunk: Uint8Array, flush: number) => Uint8Array;
  _handle?: { close?: () => void } | null;
}

/**
 * gunzipSync, with the native handle freed before returning. Deno's
 * gunzipSync frees it later, from the event loop, and not at all until the
 * loop turns: a burst of bad frames handled in one turn (a fuzzer, an
 * attacker) held hundreds of MB of zlib state outside the JS heap. Falls back
 * to gunzipSync where the engine does not have the expected shape.
 */
function gunzipOnce(data: Uint8Array, maxBytes: number): Uint8Array {
  const engine = createGunzip({ maxOutputLength: maxBytes }) as unknown as ZlibEngine;
  if (typeof engine._processChunk !== "function") return gunzipSync(data, { maxOutputLength: maxBytes });
  try {
    return engine._processChunk(data, constants.Z_FINISH);
  } finally {
    engine._handle?.close?.();
    engine._handle = null;
  }
}

/** A plain Uint8Array view of a Buffer, so callers never meet Buffer semantics. */
function asUint8Array(buf: Uint8Array): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
