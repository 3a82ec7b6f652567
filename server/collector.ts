/**
 * The collector: a TLS listener (node:tls, because `Deno.listenTls` can neither
 * verify client certificates nor set a minimum TLS version) that feeds every
 * connection into one rotating store.
 *
 * @module
 */
import tls from "node:tls";
import { ALPN_V2 } from "../shared/protocol.ts";
import type { StatsSnapshot } from "../shared/stats_snapshot.ts";
import { Connection, type IngestLimits } from "./connection.ts";
import { type FsyncMode, RotatingStore } from "./rotating_store.ts";
import type { PrivacyGuard } from "./privacy_guard.ts";
import { QuarantineFile } from "./quarantine_file.ts";
import { ServerStats } from "./server_stats.ts";
import { StreamRegistry } from "./stream_registry.ts";

/** Options for {@linkcode startCollector}. */
export interface CollectorOptions extends IngestLimits {
  /** Address to listen on. */
  host: string;
  /** Port; 0 picks a free one. */
  port: number;
  /** Server certificate chain, PEM. */
  cert: string;
  /** Server private key, PEM. */
  key: string;
  /** Lowest TLS version accepted. Default TLSv1.2. */
  minTlsVersion?: "TLSv1.2" | "TLSv1.3";
  /** Directory of the data files. */
  dataDir: string;
  /** Entries per data file. */
  rotateEntries: number;
  /** Bytes per data file (rotation by size). Default: no limit. */
  rotateBytes?: number;
  /** Durability of acknowledged data. Default: fsync each group commit. */
  fsync?: FsyncMode;
  /** De-identification check of arriving entries (--require-deidentified). */
  guard?: PrivacyGuard;
  /** Receives every stored batch of JSON lines (for --print). */
  onStored?: (lines: Uint8Array) => void;
  /** Diagnostics sink. Default: stderr. */
  log?: (message: string) => void;
  /** Clock for statistics. */
  now?: () => number;
}

/** A running collector. */
export interface Collector {
  /** The address actually bound. */
  readonly hostname: string;
  /** The port actually bound. */
  readonly port: number;
  /** Current statistics. */
  stats(): StatsSnapshot;
  /** Stops accepting, answers frames already received, closes files. */
  close(): Promise<void>;
}

/** Raised when the listener cannot start (bad certificate, port in use). */
export class ListenError extends Error {
  override name = "ListenError";
}

/** How long a graceful close waits for a peer before cutting it off. */
const CLOSE_GRACE_MS = 5000;

/** Starts a collector; resolves once it listens. */
export async function startCollector(options: CollectorOptions): Promise<Collector> {
  const log = options.log ?? ((m: string) => console.error(m));
  const stats = new ServerStats(options.now);
  const store = await RotatingStore.open({
    dir: options.dataDir,
    rotateEntries: options.rotateEntries,
    rotateBytes: options.rotateBytes,
    fsync: options.fsync,
    onFileCreated: () => stats.filesWritten++,
    onSync: () => stats.fsyncs++,
    log,
  });
  const streams = new StreamRegistry(store.recoveredStreams);
  const connections = new Set<Connection>();
  const quarantine = options.guard ? new QuarantineFile(options.dataDir) : undefined;
  const context = {
    store,
    stats,
    streams,
    limits: options,
    onStored: options.onStored,
    log,
    guard: options.guard,
    quarantine,
  };

  let server: tls.Server;
  try {
    server = tls.createServer({
      cert: options.cert,
      key: options.key,
      minVersion: options.minTlsVersion ?? "TLSv1.2",
      ALPNProtocols: [ALPN_V2],
    }, (socket) => {
      const connection = new Connection(socket, context);
      connections.add(connection);
      connection.closed.then(() => connections.delete(connection));
    });
  } catch (err) {
    await store.close();
    throw new ListenError(`cannot use the server certificate and key: ${(err as Error).message}`);
  }
  server.on("tlsClientError", (err: Error) => {
    stats.recordFrameRejected("tls_handshake");
    log(`TLS handshake failed: ${err.message}`);
  });

  await new Promise<void>((resolve, reject) => {
    server.once(
      "error",
      (err: Error) => reject(new ListenError(`cannot listen on ${options.host}:${options.port}: ${err.message}`)),
    );
    server.listen(options.port, options.host, () => resolve());
  }).catch(async (err) => {
    await store.close();
    throw err;
  });
  const address = server.address() as { address: string; port: number };

  let closing: Promise<void> | null = null;
  return {
    hostname: address.address,
    port: address.port,
    stats: () => stats.snapshot({ current_file: store.currentFile, privacy: options.guard?.stats ?? null }),
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const c of connections) c.shutdown();
        const all = Promise.all([...connections].map((c) => c.closed));
        let timer: ReturnType<typeof setTimeout> | undefined;
        const grace = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            for (const c of connections) c.destroy();
            resolve();
          }, CLOSE_GRACE_MS);
        });
        await Promise.race([all, grace]);
        clearTimeout(timer);
        await Promise.all([...connections].map((c) => c.closed));
        await stopped;
        await store.close();
        await quarantine?.close();
      })();
      return closing;
    },
  };
}
