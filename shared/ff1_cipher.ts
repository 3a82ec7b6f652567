/**
 * FF1 format-preserving encryption (NIST SP 800-38G) for fields that must keep
 * their shape: a ten-digit record number encrypts to another ten-digit number.
 * Small domains are refused: SP 800-38G Rev. 1 requires radix^length >= 1,000,000,
 * because a smaller domain can be tabulated by anyone who sees enough pairs.
 *
 * @example
 * ```ts
 * const ff1 = createFf1Cipher(crypto.getRandomValues(new Uint8Array(32)));
 * const ct = ff1.encrypt("0123456789", "0123456789");
 * ff1.decrypt(ct, "0123456789"); // "0123456789"
 * ```
 *
 * @module
 */
import { FF1 } from "@noble/ciphers/ff1.js";
import { createHash } from "node:crypto";

/** Smallest domain (radix^length) accepted, from NIST SP 800-38G Rev. 1. */
export const MIN_FF1_DOMAIN = 1_000_000;

/** Raised for a key that is not an AES-128, -192 or -256 key. */
export class Ff1KeyError extends Error {
  override name = "Ff1KeyError";
}

/** Raised when radix^length of a value is under {@linkcode MIN_FF1_DOMAIN}. */
export class Ff1DomainError extends Error {
  override name = "Ff1DomainError";
}

/** Raised for an unusable alphabet, or a character that is neither in the alphabet nor kept. */
export class Ff1AlphabetError extends Error {
  override name = "Ff1AlphabetError";
}

/** Encrypts and decrypts strings over an alphabet, keeping their length. */
export interface Ff1Cipher {
  /** Short public id of the key, e.g. `k3f9a1c`: the same key always has the same id. */
  readonly keyId: string;
  /**
   * Encrypts the characters of `value` that are in `alphabet`; characters in
   * `keep` (e.g. `"-"`) stay where they are.
   *
   * @throws {Ff1DomainError} when radix^(number of alphabet characters) < 1,000,000
   * @throws {Ff1AlphabetError} for a character in neither `alphabet` nor `keep`
   */
  encrypt(value: string, alphabet: string, keep?: string): string;
  /** Reverses {@linkcode Ff1Cipher.encrypt} with the same key, tweak, alphabet and `keep`. */
  decrypt(value: string, alphabet: string, keep?: string): string;
}

interface Radix {
  chars: string[];
  index: Map<string, number>;
  ff1: { encrypt(x: number[]): number[]; decrypt(x: number[]): number[] };
}

/**
 * Builds an FF1 cipher under an AES key of 16, 24 or 32 bytes, with an optional tweak.
 *
 * @throws {Ff1KeyError} for a key of another length
 */
export function createFf1Cipher(key: Uint8Array, tweak: Uint8Array = new Uint8Array(0)): Ff1Cipher {
  if (key.length !== 16 && key.length !== 24 && key.length !== 32) {
    throw new Ff1KeyError(`FF1 key has ${key.length} bytes; it must have 16, 24 or 32 (AES)`);
  }
  const keyId = "k" + createHash("sha256").update("tlslog ff1 key id\0").update(key).digest("hex").slice(0, 6);
  const radixes = new Map<string, Radix>();
  const radixFor = (alphabet: string): Radix => {
    let r = radixes.get(alphabet);
    if (!r) {
      const chars = [...alphabet];
      if (chars.length < 2 || chars.length > 65535 || new Set(chars).size !== chars.length) {
        throw new Ff1AlphabetError(
          `FF1 alphabet must have 2 to 65535 distinct characters, got ${JSON.stringify(alphabet)}`,
        );
      }
      r = { chars, index: new Map(chars.map((c, i) => [c, i])), ff1: FF1(chars.length, key, tweak) };
      radixes.set(alphabet, r);
    }
    return r;
  };
  const run = (value: string, alphabet: string, keep: string, direction: "encrypt" | "decrypt"): string => {
    const r = radixFor(alphabet);
    const chars = [...value];
    const digits: number[] = [];
    for (const ch of chars) {
      const d = r.index.get(ch);
      if (d !== undefined) digits.push(d);
      else if (!keep.includes(ch)) {
        throw new Ff1AlphabetError(
          `character ${JSON.stringify(ch)} is not in the FF1 alphabet ${JSON.stringify(alphabet)}`,
        );
      }
    }
    if (r.chars.length ** digits.length < MIN_FF1_DOMAIN) {
      throw new Ff1DomainError(
        `FF1 domain ${r.chars.length}^${digits.length} is under ${MIN_FF1_DOMAIN}: too small to encrypt safely`,
      );
    }
    const out = r.ff1[direction](digits);
    let k = 0;
    return chars.map((ch) => r.index.has(ch) ? r.chars[out[k++]!]! : ch).join("");
  };
  return {
    keyId,
    encrypt: (value, alphabet, keep = "") => run(value, alphabet, keep, "encrypt"),
    decrypt: (value, alphabet, keep = "") => run(value, alphabet, keep, "decrypt"),
  };
}
