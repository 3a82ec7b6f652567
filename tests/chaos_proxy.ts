/**
 * A TCP proxy for fault tests. It relays bytes between a client and a target
 * without looking at them (TLS passes through untouched) and cuts each
 * connection after a byte budget, so a cut can land in the middle of a frame
 * or a TLS record.
 *
 * @example
 * ```ts
 * const proxy = await startChaosProxy({ targetPort: collector.port, random: seededRandom(7), maxCuts: 20 });
 * // point the sender at 127.0.0.1:proxy.port, send, check what was stored
 * await proxy.close();
 * ```
 *
 * @module
 */
import { writeAll } from "../shared/bytes.ts";

/** Options for {@linkcode startChaosProxy}. */
export interface ChaosProxyOptions {
  /** Where to relay to. Default "127.0.0.1". */
  targetHost?: string;
  /** Port to relay to. */
  targetPort: number;
  /** Deterministic randomness (e.g. seededRandom from client/healthcare_source.ts); default Math.random. */
  random?: () => number;
  /**
   * For each accepted connection, after how many relayed bytes (both
   * directions together) to cut it; null = never. Default: uniformly random
   * in [minCutBytes, maxCutBytes].
   */
  cutAfterBytes?: (connectionIndex: number) => number | null;
  /** Smallest default budget. Default 1_000. */
  minCutBytes?: number;
  /** Largest default budget. Default 2_000_000. */
  maxCutBytes?: number;
  /** Stop cutting after this many cuts (so a test is guaranteed to finish). Default Infinity. */
  maxCuts?: number;
}

/** A running proxy made by {@linkcode startChaosProxy}. */
export interface ChaosProxy {
  /** The proxy listens on 127.0.0.1:port. */
  readonly port: number;
  /** Connections cut so far. */
  readonly cuts: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /**
   * Stops listening, closes every relayed connection and waits for all relay
   * tasks. Rejects with the first error `cutAfterBytes` or `random` threw, or
   * the first bad budget it returned, if any.
   */
  close(): Promise<void>;
}

/** Thrown when an option, or a budget returned by `cutAfterBytes`, breaks its rule. */
export class ChaosProxyOptionsError extends Error {
  override name = "ChaosProxyOptionsError";
  /** @param option the option's name, @param value the value received, @param rule what it must be */
  constructor(readonly option: string, readonly value: unknown, rule: string) {
    super(`${option} must be ${rule}, got ${String(value)}`);
  }
}

const RELAY_CHUNK_BYTES = 64 * 1024;

/**
 * Starts a proxy on 127.0.0.1 (a free port) that relays every accepted
 * connection to the target and cuts it, closing both sides at once, as soon
 * as its byte budget has been relayed.
 */
// deno-lint-ignore require-await -- async so that a bad option rejects the promise rather than throwing
export async function startChaosProxy(options: ChaosProxyOptions): Promise<ChaosProxy> {
  const target = { hostname: options.targetHost ?? "127.0.0.1", port: options.targetPort };
  const cutAfterBytes = options.cutAfterBytes ?? defaultBudget(options);
  const maxCuts = options.maxCuts ?? Infinity;
  checkCount("targetPort", target.port, 1, 65_535);
  checkCount("maxCuts", maxCuts, 0, Infinity);

  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const relays = new Set<Relay>();
  let cuts = 0;
  let connections = 0;
  let closing = false;
  let failure: { error: unknown } | null = null;
  const tryCut = (): boolean => {
    if (cuts >= maxCuts) return false;
    cuts++;
    return true;
  };

  const accepting = (async () => {
    while (true) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept();
      } catch (error) {
        if (!closing) failure ??= { error };
        return;
      }
      let budget: number | null;
      try {
        budget = cutAfterBytes(connections++);
        if (budget !== null && !(budget >= 0)) {
          throw new ChaosProxyOptionsError("cutAfterBytes()", budget, "null or a number >= 0");
        }
      } catch (error) {
        failure ??= { error };
        client.close();
        continue;
      }
      const relay = new Relay(client, target, budget, tryCut);
      relays.add(relay);
      relay.done.then(() => relays.delete(relay));
    }
  })();

  let closed: Promise<void> | null = null;
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get cuts() {
      return cuts;
    },
    get connections() {
      return connections;
    },
    close() {
      closed ??= (async () => {
        closing = true;
        listener.close();
        await accepting;
        const running = [...relays];
        for (const relay of running) relay.closeBoth();
        await Promise.all(running.map((relay) => relay.done));
        if (failure) throw failure.error;
      })();
      return closed;
    },
  };
}

function defaultBudget(options: ChaosProxyOptions): (connectionIndex: number) => number {
  const random = options.random ?? Math.random;
  const min = options.minCutBytes ?? 1_000;
  const max = options.maxCutBytes ?? 2_000_000;
  checkCount("minCutBytes", min, 0, Number.MAX_SAFE_INTEGER);
  checkCount("maxCutBytes", max, min, Number.MAX_SAFE_INTEGER);
  return () => min + Math.floor(random() * (max - min + 1));
}

function checkCount(option: string, value: number, min: number, max: number): void {
  if (!(value >= min && value <= max && (Number.isInteger(value) || value === Infinity))) {
    throw new ChaosProxyOptionsError(option, value, `an integer in [${min}, ${max}]`);
  }
}

/** One client connection and its upstream, relayed until the budget is spent. */
class Relay {
  /** Settles when both sides are closed; never rejects. */
  readonly done: Promise<void>;
  #client: Deno.TcpConn;
  #upstream: Deno.TcpConn | null = null;
  #budget: number | null;
  #tryCut: () => boolean;
  #relayed = 0;
  #cutting = false;
  #closed = false;

  constructor(client: Deno.TcpConn, target: Deno.ConnectOptions, budget: number | null, tryCut: () => boolean) {
    this.#client = client;
    this.#budget = budget;
    this.#tryCut = tryCut;
    this.done = this.#run(target);
  }

  /** Closes both sides without draining or half-closing them: an abrupt cut. */
  closeBoth(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
    this.#upstream?.close();
  }

  async #run(target: Deno.ConnectOptions): Promise<void> {
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect(target);
    } catch {
      this.closeBoth();
      return;
    }
    if (this.#closed) {
      upstream.close();
      return;
    }
    this.#upstream = upstream;
    // A budget of 0 is spent before any byte arrives.
    this.#take(0);
    if (this.#cutting) {
      this.closeBoth();
      return;
    }
    await Promise.all([this.#pump(this.#client, upstream), this.#pump(upstream, this.#client)]);
    this.closeBoth();
  }

  /** Relays one direction; EOF is passed on as a half-close, any error tears down both sides. */
  async #pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(RELAY_CHUNK_BYTES);
    try {
      while (true) {
        const read = await from.read(buffer);
        if (this.#cutting) return;
        if (read === null) {
          await to.closeWrite();
          return;
        }
        const allowed = this.#take(read);
        const cutHere = this.#cutting;
        await writeAll(to, buffer.subarray(0, allowed));
        // Only the direction that spent the budget cuts, once its last bytes are written.
        if (cutHere) {
          this.closeBoth();
          return;
        }
      }
    } catch {
      this.closeBoth();
    }
  }

  /** How many of `bytes` just read may be relayed; starts the cut when they reach the budget. */
  #take(bytes: number): number {
    if (this.#budget === null) return bytes;
    const remaining = this.#budget - this.#relayed;
    if (bytes < remaining) {
      this.#relayed += bytes;
      return bytes;
    }
    if (!this.#tryCut()) {
      this.#budget = null;
      return bytes;
    }
    this.#cutting = true;
    this.#relayed = this.#budget;
    return remaining;
  }
}
