import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createPseudonymizer, parseKey, WeakKeyError } from "./pseudonymizer.ts";

const key = new Uint8Array(32).fill(7);

Deno.test("createPseudonymizer().token() is stable for a key and differs between keys", () => {
  const a = createPseudonymizer(key);
  const b = createPseudonymizer(new Uint8Array(32).fill(8));
  assert.equal(a.token("483920"), createPseudonymizer(key).token("483920"));
  assert.notEqual(a.token("483920"), a.token("483921"));
  assert.notEqual(a.token("483920"), b.token("483920"));
  assert.notEqual(a.keyId, b.keyId);
});

Deno.test("createPseudonymizer().token() is the keyed HMAC-SHA256, named by key id", () => {
  const p = createPseudonymizer(key);
  const mac = createHmac("sha256", key).update("483920").digest("base64url").slice(0, 22);
  assert.equal(p.token("483920"), `pt_${p.keyId}_${mac}`);
  assert.match(p.token("1", "mrn"), /^mrn_k[0-9a-f]{6}_[A-Za-z0-9_-]{22}$/);
});

Deno.test("createPseudonymizer() refuses keys shorter than 16 bytes", () => {
  assert.throws(() => createPseudonymizer(new Uint8Array(15)), WeakKeyError);
});

Deno.test("parseKey() reads hex and base64 and refuses short keys", () => {
  assert.deepStrictEqual(parseKey("07".repeat(32) + "\n"), key);
  assert.deepStrictEqual(parseKey(btoa(String.fromCharCode(...key))), key);
  assert.throws(() => parseKey("abcd"), WeakKeyError);
});
