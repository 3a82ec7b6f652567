/**
 * The collector: a TLS listener (node:tls, because `Deno.listenTls` can neither
 * verify client certificates nor set a minimum TLS version) that feeds every
 * connection into one rotating store.
 *
 * @module
 */
import type net from "node:net";
import tls from "node:tls";
import { hostname } from "node:os";
import { basename } from "node:path";
import { ALPN_V2, encodeNack, encodeV1Error } from "../shared/protocol.ts";
import { encodeFrame } from "../shared/frame_codec.ts";
import {
  checkTlsMaterial,
  identityAllowed,
  identityName,
  peerIdentity,
  readTlsFiles,
  TlsCredentialsError,
  type TlsFiles,
  type TlsMaterial,
} from "./tls_credentials.ts";
import type { StatsSnapshot } from "../shared/stats_snapshot.ts";
import { provenanceMember } from "./provenance.ts";
import { MemoryGovernor, type MemoryProbes } from "./memory_governor.ts";
import { platformMemoryProbes } from "./memory_probes.ts";
import { ClientRateLimits, Connection, type IngestLimits, MemoryBudget } from "./connection.ts";
import { type FsyncMode, RotatingStore } from "./rotating_store.ts";
import type { PrivacyGuard } from "./privacy_guard.ts";
import { QuarantineFile } from "./quarantine_file.ts";
import { ServerStats } from "./server_stats.ts";
import { StreamRegistry } from "./stream_registry.ts";
import { AuditLog } from "./audit_log.ts";
import type { EncryptionKey } from "./sealed_file.ts";
import { createSigner, newSigningKeyPem, type NoteSigner } from "./signed_note.ts";
import { Checkpointer, type PrunedPrefix } from "./store_checkpoint.ts";
import { type RetentionPolicy, StoreArchiver } from "./store_archiver.ts";

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
  /** Lowest TLS version accepted. Default TLSv1.3. (TLS 1.2 runs on rustls: AEAD suites only.) */
  minTlsVersion?: "TLSv1.2" | "TLSv1.3";
  /** CA certificate(s), PEM, that client certificates must chain to: mutual TLS is required when set. */
  clientCa?: string;
  /** With mutual TLS: the identities (CN or SAN, `*.suffix` allowed) that may publish; others are refused. */
  allowClients?: string[];
  /** Where the certificate, key and client CA came from, so that `reloadTls()` can read them again. */
  tlsFiles?: TlsFiles;
  /** Most connections open at once (handshaking included); more are closed at once. Default 1024. */
  maxConnections?: number;
  /** A TLS handshake must finish within this long. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Per-client limits (by certificate identity, else IP address): over them a client is slowed and told why. */
  rateLimit?: { entriesPerSecond?: number; bytesPerSecond?: number };
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
  /** Clock for statistics, the audit log and checkpoints. */
  now?: () => number;
  /** Signs checkpoints. Default: a key made for this run only (tests); `serve` loads --signing-key. */
  signer?: NoteSigner;
  /** The checkpoints' origin line. Default: tlslog/<hostname>. */
  origin?: string;
  /** A checkpoint at least this often while entries arrive. Default 10 s. */
  checkpointIntervalMs?: number;
  /** Second directory every checkpoint is written to. */
  checkpointCopyDir?: string;
  /** Gzip data files once closed. Default true. */
  compressRotated?: boolean;
  /** Encrypt data files at rest. */
  encryptKey?: EncryptionKey;
  /** Delete the oldest files past these limits. */
  retention?: RetentionPolicy;
  /** Configuration recorded in the audit log's start event (no secrets). */
  auditConfig?: Record<string, unknown>;
  /**
   * Resident set, bytes, above which the collector runs a full garbage collection and returns freed
   * memory to the system (see memory_governor.ts). Default 0: it only measures.
   */
  memoryTargetBytes?: number;
  /** The memory probes. Default: this process's (memory_probes.ts). */
  memoryProbes?: MemoryProbes;
}

/** A certificate expiring sooner than this is warned about (log, /api/stats). */
const EXPIRY_WARNING_DAYS = 30;

/** How often the memory governor looks at the resident set, besides after every few MB of input. */
const MEMORY_CHECK_MS = 100;

/** How often retention by age is checked besides at each rotation. */
const RETENTION_CHECK_MS = 60_000;

/** A running collector. */
export interface Collector {
  /** The address actually bound. */
  readonly hostname: string;
  /** The port actually bound. */
  readonly port: number;
  /** Current statistics. */
  stats(): StatsSnapshot;
  /** The checkpoint key's verifier key (C2SP vkey text). */
  readonly verifierKey: string;
  /** Records an event in the audit log. */
  audit(event: string, fields?: Record<string, unknown>): void;
  /** Signs a checkpoint of everything committed so far; resolves once written. */
  checkpoint(reason: string): Promise<void>;
  /**
   * Reads the TLS files again and serves them to new connections (open ones
   * keep theirs). A file that cannot be read or used leaves the material in
   * service, and the error is logged, audited and counted. Resolves to
   * whether the new material is in service.
   */
  reloadTls(): Promise<boolean>;
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
  let material: TlsMaterial;
  try {
    material = checkTlsMaterial({ cert: options.cert, key: options.key, clientCa: options.clientCa });
  } catch (err) {
    throw new ListenError(`cannot use the TLS material: ${(err as Error).message}`);
  }
  const minVersion = options.minTlsVersion ?? "TLSv1.3";
  const mutual = options.clientCa !== undefined;
  const tlsCounters = { reloads: 0, reloadFailures: 0, refusedClients: 0 };
  const warnExpiry = (m: TlsMaterial) => {
    const days = Math.floor((m.certExpiresAt - Date.now()) / 86_400_000);
    if (days < EXPIRY_WARNING_DAYS) {
      log(
        `WARNING: the server certificate (${m.certSubject}) expires in ${days} days (${
          new Date(m.certExpiresAt).toISOString()
        })`,
      );
    }
  };
  warnExpiry(material);
  const now = options.now ?? Date.now;
  const stats = new ServerStats(options.now);
  const fsyncOff = options.fsync?.kind === "off";
  const audit = await AuditLog.open(options.dataDir, { now, log });
  const signer = options.signer ?? createSigner(newSigningKeyPem(), "tlslog-checkpoint");
  const checkpointer = await Checkpointer.open({
    dir: options.dataDir,
    copyDir: options.checkpointCopyDir,
    signer,
    origin: options.origin ?? `tlslog/${hostname()}`,
    sync: !fsyncOff,
    now,
    log,
  });
  audit.record("start", { ...options.auditConfig, checkpoint_key: signer.verifierKey });
  // Set once the store is open; the archiver and checkpoints only run after that.
  let store: RotatingStore | null = null;
  let auditAfterCheckpoint = -1;
  const writeCheckpoint = async (reason: string, pruned?: PrunedPrefix) => {
    if (!store) return;
    await audit.flush(!fsyncOff);
    const c = await checkpointer.write(store.chain, store.currentIndex, audit.head, pruned);
    audit.record("checkpoint", { reason, size: c.size, ...(pruned ? { pruned_through: pruned.seq } : {}) });
    auditAfterCheckpoint = audit.head.size;
  };
  // Rotation checkpoints coalesce: one runs, at most one more waits.
  let running: Promise<void> | null = null;
  let again = false;
  const checkpointSoon = (reason: string): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await writeCheckpoint(reason);
        } while (again);
      } catch (err) {
        log(`checkpoint failed: ${(err as Error).message}`);
      } finally {
        running = null;
      }
    })();
    return running;
  };
  let filesCompressed = 0;
  let filesDeleted = 0;
  const archiver = new StoreArchiver({
    dir: options.dataDir,
    compress: options.compressRotated ?? true,
    encryptKey: options.encryptKey,
    retention: options.retention ?? {},
    now,
    log,
    beforeDelete: async (pruned) => {
      while (running) await running;
      await writeCheckpoint("retention", pruned);
    },
    onDeleted: (info) => {
      filesDeleted += info.files.filter((f) => f.includes(".jsonl")).length;
      audit.record("retention_delete", { ...info });
    },
    onCompressed: (info) => {
      if (info.name.includes(".jsonl")) filesCompressed++;
    },
  });
  try {
    store = await RotatingStore.open({
      dir: options.dataDir,
      rotateEntries: options.rotateEntries,
      rotateBytes: options.rotateBytes,
      fsync: options.fsync,
      encryptKey: options.encryptKey,
      hashInWorker: true,
      onFileCreated: (path) => {
        stats.filesWritten++;
        audit.record("rotation", { file: basename(path) });
      },
      onFileClosed: (index) => {
        archiver.closed(index, store!.currentIndex);
        checkpointSoon("rotation");
      },
      onSync: () => stats.fsyncs++,
      log: (m) => {
        log(m);
        audit.record("recovery", { message: m });
      },
    });
  } catch (err) {
    await archiver.close();
    await checkpointer.close();
    await audit.close();
    throw err;
  }
  const openStore = store;
  await writeCheckpoint("start");
  archiver.sweep(openStore.currentIndex + 1);
  const checkpointTimer = setInterval(() => {
    if (openStore.chain.seq !== checkpointer.last?.size || audit.head.size !== auditAfterCheckpoint) {
      checkpointSoon("interval");
    }
  }, options.checkpointIntervalMs ?? 10_000);
  const retentionTimer = setInterval(() => archiver.enforce(openStore.currentIndex), RETENTION_CHECK_MS);
  const memory = new MemoryGovernor(options.memoryTargetBytes ?? 0, options.memoryProbes ?? platformMemoryProbes());
  const memoryTimer = setInterval(() => memory.check(), MEMORY_CHECK_MS);
  const streams = new StreamRegistry(store.recoveredStreams);
  const connections = new Set<Connection>();
  const quarantine = options.guard ? new QuarantineFile(options.dataDir) : undefined;
  const context = {
    store: openStore,
    stats,
    streams,
    limits: options,
    onStored: options.onStored,
    log,
    audit: (event: string, fields: Record<string, unknown>) => audit.record(event, fields),
    rateLimits: new ClientRateLimits(options.rateLimit ?? {}, now),
    // 64 MiB of entries waiting for the disk, from all connections together, before reading stops.
    budget: new MemoryBudget(64 << 20),
    memory,
    guard: options.guard,
    quarantine,
  };

  /** Closes the store, then signs a last checkpoint over everything, then closes the logs. */
  async function stopEvidence(): Promise<void> {
    clearInterval(checkpointTimer);
    clearInterval(retentionTimer);
    clearInterval(memoryTimer);
    await openStore.close();
    await archiver.close();
    while (running) await running;
    audit.record("stop", { entries: openStore.chain.seq });
    await writeCheckpoint("stop").catch((err) => log(`checkpoint failed: ${(err as Error).message}`));
    await checkpointer.close();
    await audit.close();
  }

  let server: tls.Server;
  try {
    server = tls.createServer({
      cert: material.cert,
      key: material.key,
      minVersion,
      ALPNProtocols: [ALPN_V2],
      handshakeTimeout: options.handshakeTimeoutMs ?? 10_000,
      ...(mutual ? { ca: material.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
    }, (socket) => {
      const peer = `${socket.remoteAddress}:${socket.remotePort}`;
      const identity = mutual ? peerIdentity(socket) : null;
      audit.record("connection", {
        peer,
        tls: socket.getProtocol(),
        protocol: socket.alpnProtocol || "v1",
        ...(identity ? { client: identityName(identity), client_san: identity.san } : {}),
      });
      if (options.allowClients && !(identity && identityAllowed(identity, options.allowClients))) {
        // Told why, in the protocol it speaks, then closed.
        const name = identity ? identityName(identity) : "(no certificate)";
        const error = `client "${name}" is not allowed to publish here (--allow-clients)`;
        tlsCounters.refusedClients++;
        stats.recordFrameRejected("client_not_allowed");
        audit.record("refusal", { peer, what: "connection", reason: "client_not_allowed", client: name });
        const answer = socket.alpnProtocol === ALPN_V2
          ? encodeNack({ seq: null, code: "client_not_allowed", error })
          : encodeV1Error(error);
        // Written, then closed for good: an ended socket waiting on its peer would hold up a graceful stop.
        socket.write(encodeFrame(answer), () => socket.destroy());
        Deno.unrefTimer(setTimeout(() => socket.destroy(), 2000));
        return;
      }
      const connection = new Connection(socket, {
        ...context,
        client: identity ? identityName(identity) : null,
        ...(identity ? { provenance: provenanceMember(identity) } : {}),
      });
      connections.add(connection);
      connection.closed.then(() => connections.delete(connection));
    });
  } catch (err) {
    await stopEvidence();
    throw new ListenError(`cannot use the server certificate and key: ${(err as Error).message}`);
  }
  // Sockets whose handshake has not completed, by peer address: a graceful close must not wait for them.
  const handshaking = new Map<string, net.Socket>();
  server.on("connection", (raw: net.Socket) => {
    const peer = `${raw.remoteAddress}:${raw.remotePort}`;
    if (handshaking.size + connections.size >= (options.maxConnections ?? 1024)) {
      stats.recordFrameRejected("too_many_connections");
      audit.record("refusal", { peer, what: "connection", reason: "too_many_connections" });
      raw.destroy();
      return;
    }
    handshaking.set(peer, raw);
    raw.once("close", () => handshaking.delete(peer));
  });
  server.on(
    "secureConnection",
    (socket: tls.TLSSocket) => handshaking.delete(`${socket.remoteAddress}:${socket.remotePort}`),
  );
  server.on("tlsClientError", (err: Error, socket: tls.TLSSocket) => {
    socket.destroy();
    stats.recordFrameRejected("tls_handshake");
    audit.record("refusal", {
      peer: `${socket.remoteAddress}:${socket.remotePort}`,
      what: "connection",
      reason: "tls_handshake",
      error: err.message,
    });
    log(`TLS handshake failed: ${err.message}`);
  });

  await new Promise<void>((resolve, reject) => {
    server.once(
      "error",
      (err: Error) => reject(new ListenError(`cannot listen on ${options.host}:${options.port}: ${err.message}`)),
    );
    server.listen(options.port, options.host, () => resolve());
  }).catch(async (err) => {
    await stopEvidence();
    throw err;
  });
  const address = server.address() as { address: string; port: number };
  audit.record("listening", { host: address.address, port: address.port });

  let closing: Promise<void> | null = null;
  return {
    hostname: address.address,
    port: address.port,
    verifierKey: signer.verifierKey,
    async reloadTls() {
      if (!options.tlsFiles) return false;
      try {
        const next = await readTlsFiles(options.tlsFiles);
        if (mutual && next.clientCa === undefined) throw new TlsCredentialsError("the client CA file is gone");
        server.setSecureContext({
          cert: next.cert,
          key: next.key,
          ...(mutual ? { ca: next.clientCa } : {}),
        });
        material = next;
        tlsCounters.reloads++;
        audit.record("tls_reload", {
          cert_subject: next.certSubject,
          cert_expires_at: new Date(next.certExpiresAt).toISOString(),
        });
        log(`TLS material reloaded: ${next.certSubject}, expires ${new Date(next.certExpiresAt).toISOString()}`);
        warnExpiry(next);
        return true;
      } catch (err) {
        tlsCounters.reloadFailures++;
        const message = (err as Error).message;
        audit.record("tls_reload_failed", { error: message });
        log(`TLS reload failed, keeping the certificate in service: ${message}`);
        return false;
      }
    },
    audit: (event, fields) => audit.record(event, fields),
    checkpoint: (reason) => writeCheckpoint(reason),
    stats: () => {
      const last = checkpointer.last;
      return stats.snapshot({
        current_file: openStore.currentFile,
        privacy: options.guard?.stats ?? null,
        memory: memory.stats(),
        tls: {
          min_version: minVersion,
          mutual,
          cert_subject: material.certSubject,
          cert_expires_at: new Date(material.certExpiresAt).toISOString(),
          cert_days_left: Math.floor((material.certExpiresAt - Date.now()) / 86_400_000),
          expiry_warning: material.certExpiresAt - Date.now() < EXPIRY_WARNING_DAYS * 86_400_000,
          reloads: tlsCounters.reloads,
          reload_failures: tlsCounters.reloadFailures,
          clients_refused: tlsCounters.refusedClients,
        },
        evidence: {
          chain_size: openStore.chain.seq,
          checkpoints_written: checkpointer.written,
          last_checkpoint_size: last?.size ?? null,
          last_checkpoint_at: last ? new Date(last.time).toISOString() : null,
          checkpoint_copy_failures: checkpointer.copyFailures,
          files_compressed: filesCompressed,
          files_deleted: filesDeleted,
          entries_pruned: last?.pruned?.seq ?? 0,
          archive_failures: archiver.failures,
          encrypted: options.encryptKey !== undefined,
        },
      });
    },
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const raw of handshaking.values()) raw.destroy();
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
        await stopEvidence();
        await quarantine?.close();
      })();
      return closing;
    },
  };
}
