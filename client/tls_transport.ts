/**
 * Opening a TLS connection to the collector. Certificates and hostnames are
 * verified (`Deno.connectTls`); `insecure` skips verification through
 * node:tls, because `Deno.connectTls` has no switch for that.
 *
 * @module
 */
import tls from "node:tls";

/** The byte stream the client speaks over; `Deno.TlsConn` is one. */
export interface ByteConn {
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  close(): void;
}

/** Options for {@linkcode connectTransport}. */
export interface TransportOptions {
  host: string;
  port: number;
  /** CA certificate(s), PEM, to verify the server against; the system roots when absent. */
  caCert?: string;
  /** Skip certificate and hostname verification. */
  insecure?: boolean;
  /** Client certificate chain and key (PEM), for a collector that requires mutual TLS. */
  clientCert?: string;
  clientKey?: string;
  /** ALPN protocols to offer. */
  alpnProtocols?: string[];
  /** Give up on connect and handshake after this long. Default 10000 ms. */
  timeoutMs?: number;
}

/** A connection could not be made or was cut: worth retrying. */
export class ConnectError extends Error {
  override name = "ConnectError";
}

/** The server's certificate was not trusted: retrying will not help. */
export class CertificateError extends Error {
  override name = "CertificateError";
}

/** An open connection and what the handshake settled. */
export interface Transport {
  conn: ByteConn;
  /** The ALPN protocol the server chose, or null. */
  alpnProtocol: string | null;
}

function classify(err: unknown, where: string): Error {
  const message = err instanceof Error ? err.message : String(err);
  if (/certificate|UnknownIssuer|NotValidForName|CertNotValid|self.signed|unable to verify/i.test(message)) {
    return new CertificateError(`server certificate of ${where} not trusted: ${message}`);
  }
  return new ConnectError(`cannot connect to ${where}: ${message}`);
}

/**
 * Connects and completes the TLS handshake.
 *
 * @throws {CertificateError} when the server's certificate or name is not trusted
 * @throws {ConnectError} for a refused, reset or timed-out connection
 */
export async function connectTransport(options: TransportOptions): Promise<Transport> {
  const where = `${options.host}:${options.port}`;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const attempt = options.insecure ? connectInsecure(options) : connectVerified(options);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ConnectError(`cannot connect to ${where}: no handshake within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([attempt, timeout]);
  } catch (err) {
    // A connection that completes after the timeout must not leak.
    attempt.then((t) => t.conn.close(), () => {});
    throw err instanceof ConnectError ? err : classify(err, where);
  } finally {
    clearTimeout(timer);
  }
}

async function connectVerified(options: TransportOptions): Promise<Transport> {
  const conn = await Deno.connectTls({
    hostname: options.host,
    port: options.port,
    caCerts: options.caCert ? [options.caCert] : undefined,
    alpnProtocols: options.alpnProtocols,
    ...(options.clientCert && options.clientKey ? { cert: options.clientCert, key: options.clientKey } : {}),
  });
  try {
    const info = await conn.handshake();
    return { conn, alpnProtocol: info.alpnProtocol };
  } catch (err) {
    conn.close();
    throw err;
  }
}

function connectInsecure(options: TransportOptions): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: options.host,
      port: options.port,
      servername: /^[\d.]+$|:/.test(options.host) ? undefined : options.host,
      rejectUnauthorized: false,
      ALPNProtocols: options.alpnProtocols,
      cert: options.clientCert,
      key: options.clientKey,
    });
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      socket.off("error", reject);
      resolve({ conn: new NodeSocketConn(socket), alpnProtocol: socket.alpnProtocol || null });
    });
  });
}

/** Adapts a node:tls socket to {@linkcode ByteConn}. */
class NodeSocketConn implements ByteConn {
  readonly #socket: tls.TLSSocket;
  #chunks: Uint8Array[] = [];
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (err: Error) => {
      this.#error = err;
      this.#notify();
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    const chunk = this.#chunks[0]!;
    const n = Math.min(buffer.length, chunk.length);
    buffer.set(chunk.subarray(0, n));
    if (n === chunk.length) this.#chunks.shift();
    else this.#chunks[0] = chunk.subarray(n);
    return n;
  }

  write(data: Uint8Array): Promise<number> {
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#socket.write(data, (err?: Error | null) => err ? reject(err) : resolve(data.length));
    });
  }

  close(): void {
    this.#socket.destroy();
  }
}
