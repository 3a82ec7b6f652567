import assert from "node:assert/strict";
import { TokenBucket } from "./token_bucket.ts";

/** A clock that only moves when told to. */
function fakeClock(start = 1_700_000_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => t += ms };
}

Deno.test("TokenBucket starts full, refuses past the burst, and refills at the rate", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket(10, 5, clock.now);
  assert.equal(bucket.tokens, 5);
  assert.ok(bucket.tryTake(3));
  assert.ok(bucket.tryTake(2));
  assert.ok(!bucket.tryTake(1));
  assert.equal(bucket.tokens, 0);
  assert.equal(bucket.waitMs(1), 100);
  clock.advance(99);
  assert.ok(!bucket.tryTake(1));
  clock.advance(1);
  assert.ok(bucket.tryTake(1));
  clock.advance(250);
  assert.equal(bucket.tokens, 2.5);
  assert.ok(bucket.tryTake(2));
  assert.ok(!bucket.tryTake(1));
  assert.equal(bucket.waitMs(1), 50);
  // A refused take costs nothing.
  assert.equal(bucket.tokens, 0.5);
});

Deno.test("TokenBucket never holds more than the burst, however long it was idle", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket(100, 20, clock.now);
  assert.ok(bucket.tryTake(20));
  clock.advance(3_600_000);
  assert.equal(bucket.tokens, 20);
  assert.equal(bucket.waitMs(20), 0);
  assert.ok(bucket.tryTake(20));
  assert.ok(!bucket.tryTake(1));
  assert.equal(bucket.waitMs(20), 200);
});

Deno.test("TokenBucket.take() goes into debt and returns the wait until it is paid off", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket(1000, 100, clock.now);
  assert.equal(bucket.take(60), 0);
  assert.equal(bucket.take(40), 0);
  assert.equal(bucket.tokens, 0);
  // 250 tokens short: 250 ms at 1000/s.
  assert.equal(bucket.take(250), 250);
  assert.equal(bucket.tokens, -250);
  assert.equal(bucket.waitMs(0), 250);
  assert.equal(bucket.waitMs(10), 260);
  assert.ok(!bucket.tryTake(1));
  clock.advance(100);
  assert.equal(bucket.tokens, -150);
  // More debt adds up.
  assert.equal(bucket.take(50), 200);
  clock.advance(200);
  assert.equal(bucket.tokens, 0);
  assert.equal(bucket.waitMs(0), 0);
  assert.equal(bucket.take(0), 0);
  clock.advance(30);
  assert.ok(bucket.tryTake(30));
});

Deno.test("TokenBucket.take() used as a reservation keeps the rate: acting after each wait", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket(2000, 1000, clock.now);
  const actedAt: number[] = [];
  for (let i = 0; i < 3; i++) {
    const wait = bucket.take(1000);
    clock.advance(wait);
    actedAt.push(clock.now() - 1_700_000_000_000);
  }
  // The first 1000 go at once (the burst), then 1000 every 500 ms.
  assert.deepStrictEqual(actedAt, [0, 500, 1000]);
});

Deno.test("TokenBucket lets a take above the burst through once the bucket could have refilled it", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket(10, 5, clock.now);
  // Full (5 tokens): 15 more are 1.5 s away.
  assert.equal(bucket.waitMs(20), 1500);
  assert.ok(!bucket.tryTake(20));
  clock.advance(1499);
  assert.ok(!bucket.tryTake(20));
  assert.equal(bucket.waitMs(20), 1);
  clock.advance(1);
  assert.equal(bucket.waitMs(20), 0);
  assert.ok(bucket.tryTake(20));
  // It leaves the bucket empty, not in debt.
  assert.equal(bucket.tokens, 0);
  assert.equal(bucket.waitMs(5), 500);
  // From empty, 20 take 2 s; take() reserves them the same way.
  assert.equal(bucket.waitMs(20), 2000);
  assert.equal(bucket.take(20), 2000);
  assert.equal(bucket.tokens, -20);
});

Deno.test("TokenBucket does not drift over 10,000 takes of 1 at exactly the rate", () => {
  for (const rate of [7, 1000 / 3, 2000, 0.3]) {
    const clock = fakeClock();
    const burst = 10;
    const bucket = new TokenBucket(rate, burst, clock.now);
    assert.ok(bucket.tryTake(burst));
    let taken = 0;
    for (let i = 1; i <= 10_000; i++) {
      clock.advance(1000 / rate);
      if (bucket.tryTake(1)) taken++;
    }
    assert.ok(Math.abs(taken - 10_000) <= 1, `rate ${rate}: took ${taken} of 10,000`);
    assert.ok(Math.abs(bucket.tokens) < 1, `rate ${rate}: ${bucket.tokens} tokens left`);
  }
});

Deno.test("TokenBucket under a greedy taker on an uneven clock stays within 1 token of the ideal", () => {
  const clock = fakeClock();
  const rate = 123.4;
  const burst = 5;
  const bucket = new TokenBucket(rate, burst, clock.now);
  let taken = 0;
  let elapsed = 0;
  // Steps of 0.1 to 13 ms, deterministic.
  let seed = 42;
  for (let i = 0; i < 20_000; i++) {
    while (bucket.tryTake(1)) taken++;
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const step = 0.1 + (seed % 1290) / 100;
    clock.advance(step);
    elapsed += step;
  }
  while (bucket.tryTake(1)) taken++;
  const ideal = burst + (elapsed / 1000) * rate;
  assert.ok(taken <= ideal + 1e-6, `took ${taken}, ideal ${ideal}`);
  assert.ok(taken > ideal - 1, `took ${taken}, ideal ${ideal}`);
});

Deno.test("TokenBucket with a fractional rate: one token every 2.5 s at 0.4/s", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket(0.4, 1, clock.now);
  assert.ok(bucket.tryTake(1));
  assert.equal(bucket.waitMs(1), 2500);
  clock.advance(1250);
  assert.equal(bucket.tokens, 0.5);
  assert.equal(bucket.waitMs(1), 1250);
  clock.advance(1250);
  assert.ok(bucket.tryTake(1));
  assert.equal(bucket.take(2), 5000);
  const half = new TokenBucket(1.5, 2.5, clock.now);
  assert.equal(half.tokens, 2.5);
  assert.ok(half.tryTake(2.5));
  assert.equal(half.waitMs(1.5), 1000);
});

Deno.test("TokenBucket ignores a clock that steps back", () => {
  const clock = fakeClock();
  const bucket = new TokenBucket(10, 1, clock.now);
  assert.ok(bucket.tryTake(1));
  clock.advance(50);
  assert.equal(bucket.waitMs(1), 50);
  clock.advance(-10_000);
  // No refund and no extra cost: the 50 ms of refill it saw stay.
  assert.equal(bucket.waitMs(1), 50);
  // Time counts again from the latest reading once the clock passes it.
  clock.advance(10_000);
  assert.equal(bucket.waitMs(1), 50);
  clock.advance(50);
  assert.equal(bucket.waitMs(1), 0);
});

Deno.test("TokenBucket refuses a bad rate, burst or count with a RangeError", () => {
  const now = () => 0;
  for (const rate of [0, -1, NaN, Infinity]) {
    assert.throws(() => new TokenBucket(rate, 1, now), {
      name: "RangeError",
      message: `TokenBucket: ratePerSecond must be a finite number above 0, got ${rate}`,
    });
  }
  for (const burst of [0, 0.5, -3, NaN, Infinity]) {
    assert.throws(() => new TokenBucket(1, burst, now), {
      name: "RangeError",
      message: `TokenBucket: burst must be a finite number of at least 1, got ${burst}`,
    });
  }
  const bucket = new TokenBucket(1, 1, now);
  for (const n of [-1, NaN, Infinity]) {
    assert.throws(() => bucket.tryTake(n), RangeError);
    assert.throws(() => bucket.waitMs(n), RangeError);
    assert.throws(() => bucket.take(n), RangeError);
  }
  assert.ok(bucket.tryTake(0));
  assert.equal(bucket.waitMs(0), 0);
});
