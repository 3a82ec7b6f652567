import assert from "node:assert/strict";
import { DecompressedTooLargeError, gunzipBounded, gzip, GzipFormatError } from "./gzip.ts";

const text = new TextEncoder().encode('{"msg":"hello"}');

Deno.test("gunzipBounded() round-trips gzip() at every level", () => {
  for (const level of [1, 6, 9]) assert.deepStrictEqual(gunzipBounded(gzip(text, level), 1000), text);
});

Deno.test("gunzipBounded() refuses a gzip bomb without expanding it", () => {
  const bomb = gzip(new Uint8Array(64 << 20), 9); // 64 MiB of zeros in ~65 KB
  assert.ok(bomb.length < 100_000);
  assert.throws(() => gunzipBounded(bomb, 1 << 20), DecompressedTooLargeError);
});

Deno.test("gunzipBounded() accepts output of exactly the limit and refuses one byte more", () => {
  assert.equal(gunzipBounded(gzip(text), text.length).length, text.length);
  assert.throws(() => gunzipBounded(gzip(text), text.length - 1), DecompressedTooLargeError);
});

Deno.test("gunzipBounded() names bad input as GzipFormatError", () => {
  assert.throws(() => gunzipBounded(new Uint8Array([1, 2, 3, 4]), 100), GzipFormatError);
  assert.throws(() => gunzipBounded(gzip(text).subarray(0, 10), 100), GzipFormatError);
});
