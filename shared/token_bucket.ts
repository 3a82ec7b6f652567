/**
 * A token bucket: tokens refill at a steady rate up to a cap (the burst), and
 * an action costs tokens. Pure: the clock is passed in, nothing sleeps here.
 *
 * The state is kept as one point in virtual time (the moment the bucket's
 * uncapped credit was zero, as in GCRA), so that many small takes do not
 * accumulate rounding drift, and a bucket may go into debt: then its tokens
 * are negative and waits grow until the debt is paid off.
 *
 * @module
 */

/** Tokens short by less than this count as there: float noise must not refuse an exact take. */
const EPSILON_TOKENS = 1e-6;

/**
 * A token bucket with an injected clock.
 *
 * @example
 * ```ts
 * const bucket = new TokenBucket(1000, 100, () => performance.now());
 * const wait = bucket.take(50); // reserve 50 tokens; act after `wait` ms
 * ```
 */
export class TokenBucket {
  /** Tokens added per second. */
  readonly ratePerSecond: number;
  /** Tokens the bucket holds at most (it starts full). */
  readonly burst: number;
  readonly #now: () => number;
  readonly #origin: number;
  /** Milliseconds per token. */
  readonly #interval: number;
  /** Ms since the origin at which the uncapped credit was zero: credit(t) = (t - #zero) / #interval. */
  #zero: number;
  /** The latest clock reading (ms since the origin): a clock that steps back does not refund or cost anything. */
  #last = 0;

  /**
   * @param ratePerSecond tokens added per second; a finite number above 0 (fractions allowed)
   * @param burst capacity in tokens, at least 1; the bucket starts full
   * @param now the clock in milliseconds (e.g. `performance.now`)
   * @throws {RangeError} for a rate that is not a finite number above 0, or a burst below 1
   */
  constructor(ratePerSecond: number, burst: number, now: () => number) {
    if (typeof ratePerSecond !== "number" || !Number.isFinite(ratePerSecond) || ratePerSecond <= 0) {
      throw new RangeError(`TokenBucket: ratePerSecond must be a finite number above 0, got ${ratePerSecond}`);
    }
    if (typeof burst !== "number" || !Number.isFinite(burst) || burst < 1) {
      throw new RangeError(`TokenBucket: burst must be a finite number of at least 1, got ${burst}`);
    }
    if (typeof now !== "function") throw new TypeError("TokenBucket: now must be a function returning milliseconds");
    const origin = now();
    if (!Number.isFinite(origin)) throw new RangeError(`TokenBucket: now() must return a finite number, got ${origin}`);
    this.ratePerSecond = ratePerSecond;
    this.burst = burst;
    this.#now = now;
    this.#origin = origin;
    this.#interval = 1000 / ratePerSecond;
    this.#zero = -burst * this.#interval;
  }

  /** Tokens available now: at most {@linkcode burst}, negative while in debt. */
  get tokens(): number {
    const t = this.#elapsed();
    return Math.min(this.burst, (t - this.#zero) / this.#interval);
  }

  /** Takes n tokens if available now; returns true if taken. */
  tryTake(n: number): boolean {
    checkCount(n);
    const t = this.#elapsed();
    if (this.#waitAt(n, t) > 0) return false;
    this.#takeAt(n, t);
    return true;
  }

  /**
   * Ms until n tokens will be available (0 if now). n larger than the burst
   * is allowed: it waits until the bucket could have refilled n (as if its
   * capacity were n, so a take of n then leaves it empty rather than in
   * debt), so that large batches are not starved.
   */
  waitMs(n: number): number {
    checkCount(n);
    return this.#waitAt(n, this.#elapsed());
  }

  /**
   * Takes n tokens, going into debt if needed (for "slow down, don't drop"
   * callers); returns the ms the caller should wait before the next action:
   * the time until the debt is paid off, 0 when there is none. This is also
   * exactly the time at which n tokens would have been there, so a caller may
   * use it as a reservation: take first, then wait that long before acting.
   */
  take(n: number): number {
    checkCount(n);
    const t = this.#elapsed();
    this.#takeAt(n, t);
    const wait = this.#zero - t;
    return wait > EPSILON_TOKENS * this.#interval ? wait : 0;
  }

  #elapsed(): number {
    const t = this.#now() - this.#origin;
    if (t > this.#last) this.#last = t;
    return this.#last;
  }

  #waitAt(n: number, t: number): number {
    // Credit is counted uncapped since the last take: a bucket full for long enough
    // has "refilled" n even when n is above the burst.
    const wait = this.#zero + n * this.#interval - t;
    return wait > EPSILON_TOKENS * this.#interval ? wait : 0;
  }

  #takeAt(n: number, t: number): void {
    // The cap: credit beyond max(burst, n) is lost.
    const cap = Math.max(this.burst, n);
    this.#zero = Math.max(this.#zero, t - cap * this.#interval) + n * this.#interval;
  }
}

function checkCount(n: number): void {
  if (typeof n !== "number" || !Number.isFinite(n) || n < 0) {
    throw new RangeError(`TokenBucket: a token count must be a finite number of at least 0, got ${n}`);
  }
}
