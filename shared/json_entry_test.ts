import assert from "node:assert/strict";
import { InvalidEntryError, parseEntry } from "./json_entry.ts";

Deno.test("parseEntry() returns a JSON object", () => {
  assert.deepStrictEqual(parseEntry(' {"a":1,"b":[null]} '), { a: 1, b: [null] });
});

Deno.test("parseEntry() names what a non-object is", () => {
  const cases: [string, RegExp][] = [
    ["[1]", /not a JSON object \(got an array\)/],
    ["null", /got null/],
    ["42", /got a number/],
    ['"s"', /got a string/],
    ["{broken", /not valid JSON/],
    ["", /not valid JSON/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseEntry(text), (e: unknown) => e instanceof InvalidEntryError && message.test(e.message));
  }
});
