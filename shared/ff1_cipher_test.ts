import assert from "node:assert/strict";
import { createFf1Cipher, Ff1AlphabetError, Ff1DomainError, Ff1KeyError } from "./ff1_cipher.ts";

const hex = (h: string) => Uint8Array.from(h.match(/../g)!, (x) => parseInt(x, 16));
const DIGITS = "0123456789";
const BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz";

Deno.test("createFf1Cipher() matches the NIST SP 800-38G FF1 samples", () => {
  const k128 = hex("2B7E151628AED2A6ABF7158809CF4F3C");
  const k256 = hex("2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94");
  const tweak = hex("39383736353433323130");
  const cases = [
    // [key, tweak, alphabet, plaintext, ciphertext]: samples 1, 2, 3, 7 and 9.
    [k128, new Uint8Array(0), DIGITS, "0123456789", "2433477484"],
    [k128, tweak, DIGITS, "0123456789", "6124200773"],
    [k128, hex("3737373770717273373737"), BASE36, "0123456789abcdefghi", "a9tv40mll9kdu509eum"],
    [k256, new Uint8Array(0), DIGITS, "0123456789", "6657667009"],
    [k256, hex("3737373770717273373737"), BASE36, "0123456789abcdefghi", "xs8a0azh2avyalyzuwd"],
  ] as const;
  for (const [key, tw, alphabet, pt, ct] of cases) {
    const ff1 = createFf1Cipher(key, tw);
    assert.deepStrictEqual([ff1.encrypt(pt, alphabet), ff1.decrypt(ct, alphabet)], [ct, pt]);
  }
});

Deno.test("Ff1Cipher.encrypt() round-trips and keeps the shape, with kept separators", () => {
  const ff1 = createFf1Cipher(crypto.getRandomValues(new Uint8Array(32)));
  const ct = ff1.encrypt("123-45-6789", DIGITS, "-");
  assert.match(ct, /^\d{3}-\d{2}-\d{4}$/);
  assert.notEqual(ct, "123-45-6789");
  assert.equal(ff1.decrypt(ct, DIGITS, "-"), "123-45-6789");
  assert.equal(ff1.encrypt("123-45-6789", DIGITS, "-"), ct);
});

Deno.test("Ff1Cipher.encrypt() refuses a domain under 10^6", () => {
  const ff1 = createFf1Cipher(new Uint8Array(16));
  assert.throws(() => ff1.encrypt("12345", DIGITS), Ff1DomainError);
  assert.throws(() => ff1.encrypt("1111111111111111111", "01"), Ff1DomainError);
  assert.equal(ff1.encrypt("123456", DIGITS).length, 6);
});

Deno.test("Ff1Cipher.encrypt() refuses characters outside the alphabet and bad alphabets", () => {
  const ff1 = createFf1Cipher(new Uint8Array(16));
  assert.throws(() => ff1.encrypt("123-456-789", DIGITS), Ff1AlphabetError);
  assert.throws(() => ff1.encrypt("1234567", "1"), Ff1AlphabetError);
  assert.throws(() => ff1.encrypt("1234567", "1123"), Ff1AlphabetError);
});

Deno.test("createFf1Cipher() refuses a key that is not an AES key and names the key by id", () => {
  assert.throws(() => createFf1Cipher(new Uint8Array(15)), Ff1KeyError);
  const a = createFf1Cipher(new Uint8Array(16));
  assert.match(a.keyId, /^k[0-9a-f]{6}$/);
  assert.equal(createFf1Cipher(new Uint8Array(16)).keyId, a.keyId);
  assert.notEqual(createFf1Cipher(new Uint8Array(16).fill(1)).keyId, a.keyId);
});
