import assert from "node:assert/strict";
import { backoffDelay } from "./backoff.ts";

Deno.test("backoffDelay() doubles from 1 s and stops at the cap (no jitter at random 0.5)", () => {
  const schedule = Array.from({ length: 8 }, (_, i) => backoffDelay(i, { maxMs: 30_000 }, () => 0.5));
  assert.deepStrictEqual(schedule, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
});

Deno.test("backoffDelay() spreads each delay by ±10 % with the default jitter", () => {
  assert.equal(backoffDelay(2, {}, () => 0), 3600);
  assert.equal(backoffDelay(2, {}, () => 0.999999), 4400);
  assert.equal(backoffDelay(50, { maxMs: 10_000 }, () => 0), 9000);
});

Deno.test("backoffDelay() honours custom initial delay and jitter 0", () => {
  assert.deepStrictEqual([0, 1, 2].map((a) => backoffDelay(a, { initialMs: 50, jitter: 0 })), [50, 100, 200]);
  assert.equal(backoffDelay(10_000, { jitter: 0 }), 30_000);
});
