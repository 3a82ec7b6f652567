/**
 * Reconnect delays: exponential from 1 s, doubling, capped, with jitter so
 * that many clients cut off together do not return together.
 *
 * @module
 */

/** Options for {@linkcode backoffDelay}. */
export interface BackoffOptions {
  /** First delay. Default 1000 ms. */
  initialMs?: number;
  /** Largest delay before jitter. Default 30000 ms. */
  maxMs?: number;
  /** Spread of the jitter as a fraction of the delay: 0.2 gives ±10 %. Default 0.2. */
  jitter?: number;
}

/**
 * The delay before retry number `attempt` (0-based): `min(max, initial * 2^attempt)`
 * spread by ±jitter/2. `random` returns a number in [0, 1); pass a fixed one in tests.
 *
 * @example
 * ```ts
 * backoffDelay(2, {}, () => 0.5); // 4000
 * ```
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const initial = options.initialMs ?? 1000;
  const max = options.maxMs ?? 30_000;
  const jitter = options.jitter ?? 0.2;
  const base = Math.min(max, initial * 2 ** Math.min(attempt, 52));
  return Math.round(base * (1 - jitter / 2 + jitter * random()));
}
