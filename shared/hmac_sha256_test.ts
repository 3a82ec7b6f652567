import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { seededRandom } from "../client/healthcare_source.ts";
import { createHmacSha256 } from "./hmac_sha256.ts";

const expected = (key: Uint8Array, message: string) =>
  new Uint8Array(createHmac("sha256", key).update(message).digest());

Deno.test("createHmacSha256() equals node:crypto HMAC-SHA256 for short, long, non-ASCII messages and any key length", () => {
  const random = seededRandom(5);
  for (const keyLength of [1, 16, 32, 63, 64, 65, 100]) {
    const key = Uint8Array.from({ length: keyLength }, () => Math.floor(random() * 256));
    const mac = createHmacSha256(key);
    for (
      const message of ["", "483920", "a".repeat(55), "b".repeat(56), "c".repeat(200), "é".repeat(27), "é".repeat(28)]
    ) {
      assert.deepStrictEqual(mac(message), expected(key, message), `key ${keyLength}, message ${message.length}`);
    }
  }
});

Deno.test("createHmacSha256() matches RFC 4231 test case 2", () => {
  const mac = createHmacSha256(new TextEncoder().encode("Jefe"));
  const hex = Array.from(mac("what do ya want for nothing?"), (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
});
