import assert from "node:assert/strict";
import { concatBytes, writeAll } from "./bytes.ts";

Deno.test("writeAll keeps writing until a writer that takes 3 bytes a call has all of it", async () => {
  const got: number[] = [];
  const writer = {
    write(p: Uint8Array): Promise<number> {
      const n = Math.min(3, p.length);
      got.push(...p.subarray(0, n));
      return Promise.resolve(n);
    },
  };
  const data = Uint8Array.from({ length: 10 }, (_, i) => i);
  await writeAll(writer, data);
  assert.deepEqual(got, [...data]);
});

Deno.test("concatBytes joins parts in order into a new buffer", () => {
  assert.deepEqual(concatBytes([Uint8Array.of(1, 2), new Uint8Array(0), Uint8Array.of(3)]), Uint8Array.of(1, 2, 3));
  assert.deepEqual(concatBytes([]), new Uint8Array(0));
  const one = Uint8Array.of(9);
  const copy = concatBytes([one]);
  assert.deepEqual(copy, one);
  assert.notEqual(copy, one);
});
