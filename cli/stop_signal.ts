/**
 * SIGINT and SIGTERM as an AbortSignal, for commands that run until stopped.
 *
 * @module
 */

/** An AbortSignal that fires on the first SIGINT or SIGTERM. */
export interface StopSignal {
  signal: AbortSignal;
  /** Which signal arrived, or null. */
  received(): Deno.Signal | null;
  /** Removes the listeners. */
  dispose(): void;
}

/** Listens for SIGINT and SIGTERM until disposed. */
export function listenForStop(): StopSignal {
  const controller = new AbortController();
  let received: Deno.Signal | null = null;
  const handlers = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const handler = () => {
      received ??= sig;
      controller.abort();
    };
    Deno.addSignalListener(sig, handler);
    return [sig, handler] as const;
  });
  return {
    signal: controller.signal,
    received: () => received,
    dispose() {
      for (const [sig, handler] of handlers) Deno.removeSignalListener(sig, handler);
    },
  };
}

/**
 * Resolves with the name of the first SIGINT or SIGTERM. Pass the listener of
 * a command that installed it before starting up, so that a signal during
 * start-up is not lost (and does not kill the process unhandled).
 */
export async function waitForStopSignal(stop: StopSignal = listenForStop()): Promise<Deno.Signal> {
  try {
    if (!stop.signal.aborted) {
      await new Promise((resolve) => stop.signal.addEventListener("abort", resolve, { once: true }));
    }
    return stop.received()!;
  } finally {
    stop.dispose();
  }
}
