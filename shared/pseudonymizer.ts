/**
 * Keyed pseudonyms for identifiers: HMAC-SHA256 under a secret key. An unkeyed
 * SHA-256 of a six-digit patient ID is reversed by hashing all million values;
 * without the key, a token reveals nothing. Tokens name the key that made them.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { createHmacSha256 } from "./hmac_sha256.ts";

/** Raised for a key that is too short to be secret. */
export class WeakKeyError extends Error {
  override name = "WeakKeyError";
}

/** Smallest key accepted, in bytes (NIST SP 800-107: at least the security strength). */
export const MIN_KEY_BYTES = 16;

/** Turns identifiers into stable, keyed tokens. */
export interface Pseudonymizer {
  /** Short public id of the key: the same key always has the same id. */
  readonly keyId: string;
  /** The token for `id`, e.g. `pt_k3f9a1c_Jx0...`; same id and key, same token. */
  token(id: string, prefix?: string): string;
}

/**
 * Builds a pseudonymiser for `key`.
 *
 * @example
 * ```ts
 * const p = createPseudonymizer(crypto.getRandomValues(new Uint8Array(32)));
 * p.token("483920"); // "pt_k..._..."
 * ```
 */
export function createPseudonymizer(key: Uint8Array): Pseudonymizer {
  if (key.length < MIN_KEY_BYTES) {
    throw new WeakKeyError(`pseudonymisation key has ${key.length} bytes; at least ${MIN_KEY_BYTES} are required`);
  }
  const mac = createHmacSha256(key);
  const keyId = "k" + createHash("sha256").update("tlslog key id\0").update(key).digest("hex").slice(0, 6);
  return {
    keyId,
    token(id: string, prefix = "pt"): string {
      return `${prefix}_${keyId}_${base64url22(mac(id))}`;
    },
  };
}

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** The first 22 base64url characters (132 bits) of a MAC, as `digest("base64url").slice(0, 22)` gives. */
function base64url22(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < 15; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += B64URL[n >>> 18]! + B64URL[(n >>> 12) & 63]! + B64URL[(n >>> 6) & 63]! + B64URL[n & 63]!;
  }
  const n = (bytes[15]! << 8) | bytes[16]!;
  return out + B64URL[n >>> 10]! + B64URL[(n >>> 4) & 63]!;
}

/**
 * Reads a key from text: 64 hex digits, or base64 of at least 16 bytes.
 *
 * @throws {WeakKeyError} when the text holds fewer than 16 bytes of key
 */
export function parseKey(text: string): Uint8Array {
  const t = text.trim();
  const bytes = /^[0-9a-fA-F]+$/.test(t) && t.length % 2 === 0
    ? Uint8Array.from(t.match(/../g)!, (h) => parseInt(h, 16))
    : Uint8Array.from(atob(t.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  if (bytes.length < MIN_KEY_BYTES) {
    throw new WeakKeyError(`key holds ${bytes.length} bytes; at least ${MIN_KEY_BYTES} are required`);
  }
  return bytes;
}
