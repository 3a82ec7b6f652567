/**
 * The chaos proxy over real sockets on 127.0.0.1, in front of an echo server.
 */
import assert from "node:assert/strict";
import { seededRandom } from "../client/healthcare_source.ts";
import { ChaosProxyOptionsError, startChaosProxy } from "./chaos_proxy.ts";
import { concatBytes, writeAll } from "../shared/bytes.ts";

const TIMEOUT_MS = 10_000;

class WaitTimeoutError extends Error {
  override name = "WaitTimeoutError";
  constructor(readonly what: string, readonly timeoutMs: number) {
    super(`${what} did not happen within ${timeoutMs} ms`);
  }
}

/** Waits for `promise`, failing after `TIMEOUT_MS`. */
async function within<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeoutError(what, TIMEOUT_MS)), TIMEOUT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function randomBytes(length: number, seed: number): Uint8Array {
  const random = seededRandom(seed);
  return Uint8Array.from({ length }, () => Math.floor(random() * 256));
}

/** Errors a peer sees when the other end went away. */
function isDisconnect(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.NotConnected || error instanceof Deno.errors.ConnectionAborted;
}

/** What a client read until its connection ended. */
interface Received {
  bytes: Uint8Array;
  end: "eof" | "reset";
}

async function readToEnd(conn: Deno.Conn): Promise<Received> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const read = await conn.read(buffer);
      if (read === null) return { bytes: concatBytes(chunks), end: "eof" };
      chunks.push(buffer.slice(0, read));
    }
  } catch (error) {
    if (error instanceof Deno.errors.ConnectionReset) return { bytes: concatBytes(chunks), end: "reset" };
    throw error;
  }
}

/** Writes `payload` then half-closes, stopping quietly if the connection is cut. */
async function sendAll(conn: Deno.Conn, payload: Uint8Array): Promise<void> {
  try {
    await writeAll(conn, payload);
    await conn.closeWrite();
  } catch (error) {
    if (!isDisconnect(error)) throw error;
  }
}

/** Sends `payload` through a new connection to `port` while reading back until the end. */
async function exchange(port: number, payload: Uint8Array): Promise<Received> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const [sent, received] = await Promise.allSettled([sendAll(conn, payload), readToEnd(conn)]);
    if (sent.status === "rejected") throw sent.reason;
    if (received.status === "rejected") throw received.reason;
    return received.value;
  } finally {
    conn.close();
  }
}

/** An echo server on 127.0.0.1 that counts what it received. */
interface EchoServer {
  port: number;
  /** Bytes received over all connections. */
  readonly received: number;
  /** Waits until every connection accepted so far has ended. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

function startEchoServer(): EchoServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const handlers: Promise<void>[] = [];
  let received = 0;
  let closing = false;

  async function echo(conn: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const read = await conn.read(buffer);
        if (read === null) {
          await conn.closeWrite();
          return;
        }
        received += read;
        await writeAll(conn, buffer.subarray(0, read));
      }
    } catch (error) {
      const closedByUs = closing &&
        (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted);
      if (!isDisconnect(error) && !closedByUs) throw error;
    } finally {
      if (conns.delete(conn)) conn.close();
    }
  }

  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      handlers.push(echo(conn));
    }
  })();

  return {
    port: (listener.addr as Deno.NetAddr).port,
    get received() {
      return received;
    },
    async idle() {
      await Promise.all(handlers);
    },
    async close() {
      closing = true;
      listener.close();
      await accepting;
      for (const conn of conns) {
        conns.delete(conn);
        conn.close();
      }
      await Promise.all(handlers);
    },
  };
}

function isPrefix(prefix: Uint8Array, of: Uint8Array): boolean {
  return prefix.length <= of.length && prefix.every((byte, i) => byte === of[i]);
}

Deno.test("startChaosProxy() relays 5 MB both ways intact when cutAfterBytes returns null", async () => {
  const echo = startEchoServer();
  const proxy = await startChaosProxy({ targetPort: echo.port, cutAfterBytes: () => null });
  try {
    const payload = randomBytes(5 * 1024 * 1024, 1);
    const received = await within("the 5 MB round trip", exchange(proxy.port, payload));
    assert.deepStrictEqual(received, { bytes: payload, end: "eof" });
    await within("the echo server to finish", echo.idle());
    assert.deepStrictEqual({ cuts: proxy.cuts, connections: proxy.connections, echoed: echo.received }, {
      cuts: 0,
      connections: 1,
      echoed: payload.length,
    });
  } finally {
    await proxy.close();
    await echo.close();
  }
});

Deno.test("startChaosProxy() cuts a connection once 1000 bytes went through in total", async () => {
  const echo = startEchoServer();
  const proxy = await startChaosProxy({ targetPort: echo.port, cutAfterBytes: () => 1000 });
  try {
    const payload = randomBytes(64 * 1024, 2);
    const received = await within("the cut", exchange(proxy.port, payload));
    await within("the echo server to see the cut", echo.idle());
    const total = echo.received + received.bytes.length;
    assert.ok(total <= 1000, `${echo.received} bytes reached the echo server and ${received.bytes.length} came back`);
    assert.deepStrictEqual({
      cuts: proxy.cuts,
      connections: proxy.connections,
      closed: received.end === "eof" || received.end === "reset",
      echoedPrefix: isPrefix(received.bytes, payload),
    }, { cuts: 1, connections: 1, closed: true, echoedPrefix: true });
  } finally {
    await proxy.close();
    await echo.close();
  }
});

Deno.test("startChaosProxy() draws the default budget from random in [minCutBytes, maxCutBytes]", async () => {
  const echo = startEchoServer();
  const proxy = await startChaosProxy({ targetPort: echo.port, random: () => 0, minCutBytes: 700, maxCutBytes: 900 });
  try {
    const received = await within("the cut", exchange(proxy.port, randomBytes(64 * 1024, 3)));
    await within("the echo server to see the cut", echo.idle());
    const total = echo.received + received.bytes.length;
    assert.ok(total <= 700, `${echo.received} bytes reached the echo server and ${received.bytes.length} came back`);
    assert.deepStrictEqual({ cuts: proxy.cuts, connections: proxy.connections }, { cuts: 1, connections: 1 });
  } finally {
    await proxy.close();
    await echo.close();
  }
});

Deno.test("startChaosProxy() relays connections untouched after maxCuts cuts", async () => {
  const echo = startEchoServer();
  const indexes: number[] = [];
  const proxy = await startChaosProxy({
    targetPort: echo.port,
    cutAfterBytes: (index) => {
      indexes.push(index);
      return 1000;
    },
    maxCuts: 2,
  });
  try {
    const payload = randomBytes(256 * 1024, 4);
    const intact: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      const received = await within(`exchange ${i}`, exchange(proxy.port, payload));
      intact.push(
        received.end === "eof" && received.bytes.length === payload.length && isPrefix(received.bytes, payload),
      );
    }
    assert.deepStrictEqual({ intact, indexes, cuts: proxy.cuts, connections: proxy.connections }, {
      intact: [false, false, true, true],
      indexes: [0, 1, 2, 3],
      cuts: 2,
      connections: 4,
    });
  } finally {
    await proxy.close();
    await echo.close();
  }
});

Deno.test("ChaosProxy.close() ends live connections and leaves no ops or resources behind", async () => {
  const echo = startEchoServer();
  const proxy = await startChaosProxy({ targetPort: echo.port, cutAfterBytes: () => null });
  const clients: Deno.Conn[] = [];
  try {
    const hello = new TextEncoder().encode("hello");
    for (let i = 0; i < 3; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      clients.push(conn);
      await writeAll(conn, hello);
      const buffer = new Uint8Array(hello.length);
      assert.deepStrictEqual(await within("the echo", conn.read(buffer)), hello.length);
    }
    // Idle: no relayed bytes are pending when the proxy closes them.
    const ends = clients.map((conn) => readToEnd(conn));
    await within("close()", proxy.close());
    const results = await within("the clients to see the end", Promise.all(ends));
    assert.deepStrictEqual(
      results.map((r) => ({ bytes: r.bytes.length, closed: r.end === "eof" || r.end === "reset" })),
      [
        { bytes: 0, closed: true },
        { bytes: 0, closed: true },
        { bytes: 0, closed: true },
      ],
    );
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: proxy.port }), Deno.errors.ConnectionRefused);
    assert.deepStrictEqual({ cuts: proxy.cuts, connections: proxy.connections }, { cuts: 0, connections: 3 });
  } finally {
    for (const conn of clients) conn.close();
    await proxy.close();
    await echo.close();
  }
});

Deno.test("startChaosProxy() closes the client connection when the upstream connect fails", async () => {
  const closedListener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (closedListener.addr as Deno.NetAddr).port;
  closedListener.close();
  const proxy = await startChaosProxy({ targetPort: deadPort, cutAfterBytes: () => null });
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const received = await within("the client to be closed", readToEnd(conn));
      assert.deepStrictEqual({
        bytes: received.bytes.length,
        closed: received.end === "eof" || received.end === "reset",
      }, {
        bytes: 0,
        closed: true,
      });
    } finally {
      conn.close();
    }
    assert.deepStrictEqual({ cuts: proxy.cuts, connections: proxy.connections }, { cuts: 0, connections: 1 });
  } finally {
    await proxy.close();
  }
});

Deno.test("startChaosProxy() rejects minCutBytes above maxCutBytes before listening", async () => {
  await assert.rejects(
    startChaosProxy({ targetPort: 1, minCutBytes: 10, maxCutBytes: 5 }),
    new ChaosProxyOptionsError("maxCutBytes", 5, `an integer in [10, ${Number.MAX_SAFE_INTEGER}]`),
  );
});

Deno.test("ChaosProxy.close() rejects with a bad budget cutAfterBytes returned", async () => {
  const echo = startEchoServer();
  const proxy = await startChaosProxy({ targetPort: echo.port, cutAfterBytes: () => -1 });
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const received = await within("the client to be closed", readToEnd(conn));
      assert.deepStrictEqual(received.bytes.length, 0);
    } finally {
      conn.close();
    }
  } finally {
    await assert.rejects(
      proxy.close(),
      new ChaosProxyOptionsError("cutAfterBytes()", -1, "null or a number >= 0"),
    );
    await echo.close();
  }
});
