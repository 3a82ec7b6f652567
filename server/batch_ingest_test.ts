import assert from "node:assert/strict";
import { BatchFormatError, ingestBatch } from "./batch_ingest.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("ingestBatch() keeps a valid batch as it is", () => {
  const body = enc.encode('{"a":1}\n{"b":2}\n');
  const out = ingestBatch(body, 2, 1000);
  assert.deepStrictEqual({ ...out, data: dec.decode(out.data) }, {
    data: '{"a":1}\n{"b":2}\n',
    count: 2,
    rejected: [],
  });
});

Deno.test("ingestBatch() refuses bad entries one by one and keeps the rest", () => {
  const body = enc.encode(`{"a":1}\n[1,2]\nnope\n{"big":"${"x".repeat(100)}"}\n{"b":2}\n`);
  const out = ingestBatch(body, 5, 50);
  assert.deepStrictEqual({ ...out, data: dec.decode(out.data) }, {
    data: '{"a":1}\n{"b":2}\n',
    count: 2,
    rejected: [
      { index: 1, code: "invalid_entry", error: "not a JSON object (got an array)" },
      { index: 2, code: "invalid_entry", error: out.rejected[1]!.error },
      { index: 3, code: "entry_too_large", error: "entry exceeds max-entry-bytes 50" },
    ],
  });
  assert.match(out.rejected[1]!.error, /^not valid JSON/);
});

Deno.test("ingestBatch() refuses a body whose line count differs from the header", () => {
  assert.throws(
    () => ingestBatch(enc.encode('{"a":1}\n'), 2, 100),
    (e: unknown) =>
      e instanceof BatchFormatError && e.code === "bad_batch" && /says 2 entries, body holds 1/.test(e.message),
  );
  assert.throws(
    () => ingestBatch(enc.encode('{"a":1}'), 1, 100),
    (e: unknown) => e instanceof BatchFormatError && /end with a newline/.test(e.message),
  );
});

Deno.test("ingestBatch() refuses invalid UTF-8", () => {
  assert.throws(
    () => ingestBatch(new Uint8Array([0x7b, 0xff, 0x7d, 0x0a]), 1, 100),
    (e: unknown) => e instanceof BatchFormatError && e.code === "bad_utf8",
  );
});
