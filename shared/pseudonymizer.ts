/**
 * Keyed pseudonyms for identifiers: HMAC-SHA256 under a secret key. An unkeyed
 * SHA-256 of a six-digit patient ID is reversed by hashing all million values;
 * without the key, a token reveals nothing. Tokens name the key that made them.
 *
 * @module
 */
import { createHash, createHmac } from "node:crypto";

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
  const keyId = "k" + createHash("sha256").update("tlslog key id\0").update(key).digest("hex").slice(0, 6);
  return {
    keyId,
    token(id: string, prefix = "pt"): string {
      const mac = createHmac("sha256", key).update(id).digest("base64url").slice(0, 22);
      return `${prefix}_${keyId}_${mac}`;
    },
  };
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
