/**
 * `tlslog serve`: the collector, with its dashboard, until SIGINT or SIGTERM.
 *
 * @module
 */
import { createDashboardApp } from "../dashboard/dashboard_app.ts";
import { type Collector, type CollectorOptions, ListenError, startCollector } from "../server/collector.ts";
import { readPemFile } from "../shared/pem_files.ts";
import { createPrivacyGuard } from "../server/privacy_guard.ts";
import { ff1Paths } from "../shared/deidentify.ts";
import type { FsyncMode } from "../server/rotating_store.ts";
import { DEFAULT_POLICY, loadPolicy } from "../shared/privacy_policy.ts";
import {
  choiceFlag,
  type CommandSpec,
  durationFlag,
  formatHelp,
  intFlag,
  type ParsedFlags,
  parseFlags,
  sizeFlag,
  stringFlag,
  UsageError,
} from "./flags.ts";
import { listenForStop, waitForStopSignal } from "./stop_signal.ts";
import { dirname, join, resolve } from "node:path";
import { generateDashboardToken } from "../dashboard/dashboard_app.ts";
import type { TlsFiles } from "../server/tls_credentials.ts";
import { readEncryptionKey } from "../server/sealed_file.ts";
import { ensureSigningKey, type NoteSigner } from "../server/signed_note.ts";
import { VERIFIER_KEY_NAME } from "../server/store_checkpoint.ts";

/** The command's flags and help. */
export const serveSpec: CommandSpec = {
  name: "serve",
  summary:
    "Run the collector: receive entries over TLS (protocol v1 and v2 on one port), store them in rotating .jsonl files, serve the dashboard.",
  usage: "tlslog serve [flags]",
  flags: {
    host: { type: "string", default: "0.0.0.0", help: "address to listen on" },
    port: { type: "string", default: "8443", help: "TLS port (0 picks a free one)" },
    cert: { type: "string", default: "certs/server.crt", arg: "file", help: "server certificate chain (PEM)" },
    key: { type: "string", default: "certs/server.key", arg: "file", help: "server private key (PEM)" },
    "tls-min": {
      type: "string",
      default: "1.3",
      arg: "version",
      help: "lowest TLS version accepted: 1.3, or 1.2 (AEAD cipher suites only)",
    },
    "client-ca": {
      type: "string",
      arg: "file",
      help: "require client certificates (mutual TLS) that chain to this CA (PEM)",
    },
    "allow-clients": {
      type: "string",
      arg: "names",
      help: "with --client-ca: comma-separated client identities (CN or SAN; *.suffix) that may publish",
    },
    "dashboard-token": {
      type: "string",
      arg: "token",
      help: "token the dashboard requires (else $TLSLOG_DASHBOARD_TOKEN, else one is generated and printed)",
    },
    "data-dir": { type: "string", default: "./data", arg: "dir", help: "where the .jsonl files go" },
    "rotate-entries": { type: "string", default: "10", help: "entries per file before a new file is started" },
    "rotate-bytes": {
      type: "string",
      arg: "size",
      help: "also start a new file when one reaches this size (e.g. 64MiB)",
    },
    fsync: {
      type: "string",
      default: "batch",
      arg: "mode",
      help:
        "batch: ack only after fsync (group commit); interval=<ms>: ack after write, fsync every ms; off: OS decides",
    },
    "dashboard-port": { type: "string", default: "8080", help: "dashboard HTTP port; 0 turns it off" },
    "dashboard-host": { type: "string", default: "127.0.0.1", help: "dashboard address" },
    print: { type: "boolean", help: "print every stored entry to stdout" },
    "require-deidentified": {
      type: "string",
      default: "off",
      help: "check arriving entries with the policy's detectors: off, reject, quarantine (restricted file) or redact",
    },
    policy: { type: "string", arg: "file", help: "privacy policy whose detectors the check runs (default: built-in)" },
    "max-frame-bytes": { type: "string", default: "1MiB", help: "largest frame accepted (compressed)" },
    "max-batch-bytes": { type: "string", default: "16MiB", help: "largest decompressed frame (gzip bombs stop here)" },
    "max-entry-bytes": { type: "string", default: "1MiB", help: "largest single entry" },
    "max-connections": { type: "string", default: "1024", help: "most connections open at once; more are closed" },
    "memory-target": {
      type: "string",
      default: "192MiB",
      arg: "size",
      help: "resident memory above which the collector collects garbage and returns it to the system (0: off)",
    },
    "handshake-timeout": {
      type: "string",
      default: "10s",
      arg: "duration",
      help: "a TLS handshake must finish within",
    },
    "idle-timeout": {
      type: "string",
      default: "10m",
      arg: "duration",
      help: "close a connection silent both ways this long",
    },
    "frame-timeout": {
      type: "string",
      default: "30s",
      arg: "duration",
      help: "refuse and close a frame begun and not finished within this (slow loris)",
    },
    "rate-limit": {
      type: "string",
      arg: "entries/s",
      help: "per client (certificate identity, else IP): slow a client down past this many entries/s, and tell it",
    },
    "rate-limit-bytes": {
      type: "string",
      arg: "size/s",
      help: "per client: slow it down past this many decompressed bytes/s (e.g. 8MiB)",
    },
    "signing-key": {
      type: "string",
      default: "keys/tlslog-checkpoint.key",
      arg: "file",
      help:
        "Ed25519 key that signs checkpoints (PKCS#8 PEM); made on first start (mode 0600). Keep it off the data volume",
    },
    origin: { type: "string", arg: "name", help: "the checkpoints' origin line (default: tlslog/<hostname>)" },
    "checkpoint-interval": {
      type: "string",
      default: "10s",
      arg: "duration",
      help: "sign a checkpoint at least this often while entries arrive (also at every rotation and stop)",
    },
    "checkpoint-copy": {
      type: "string",
      arg: "dir",
      help: "also write every checkpoint here (an off-host mount): the anchor a rewrite of the data dir cannot reach",
    },
    "compress-rotated": { type: "boolean", default: true, help: "gzip data files once they are closed" },
    "encrypt-key": {
      type: "string",
      arg: "file",
      help: "encrypt data files at rest with AES-256-GCM under this 32-byte key (hex or base64; openssl rand -hex 32)",
    },
    retention: { type: "string", arg: "days", help: "delete closed files older than this many days" },
    "retention-files": { type: "string", arg: "n", help: "keep at most this many data files" },
  },
  examples: [
    "tlslog serve --cert certs/server.crt --key certs/server.key",
    "tlslog serve --port 0 --dashboard-port 0 --data-dir /tmp/logs --print",
    "tlslog serve --encrypt-key at-rest.key --retention 30 --checkpoint-copy /mnt/anchor",
  ],
};

/** Parses `--fsync batch|interval=<ms>|off`. */
export function parseFsyncMode(text: string): FsyncMode {
  if (text === "batch") return { kind: "batch" };
  if (text === "off") return { kind: "off" };
  const m = /^interval=(\d+)(ms)?$/.exec(text);
  if (m && Number(m[1]) >= 1 && Number(m[1]) <= 60_000) return { kind: "interval", ms: Number(m[1]) };
  throw new UsageError(`--fsync must be batch, interval=<1..60000 ms> or off, got "${text}"`, "serve");
}

/** Collector options from the serve flags (certificates read, sizes checked). */
export function collectorOptionsFromFlags(flags: ParsedFlags): CollectorOptions {
  const certPath = stringFlag(flags, "cert")!;
  const keyPath = stringFlag(flags, "key")!;
  const clientCaPath = stringFlag(flags, "client-ca");
  const allow = stringFlag(flags, "allow-clients");
  if (allow !== undefined && clientCaPath === undefined) {
    throw new UsageError("--allow-clients needs --client-ca: without mutual TLS no client has an identity", "serve");
  }
  const allowClients = allow?.split(",").map((s) => s.trim()).filter(Boolean);
  if (allowClients !== undefined && allowClients.length === 0) {
    throw new UsageError("--allow-clients needs at least one name", "serve");
  }
  const tlsMin = choiceFlag(flags, serveSpec, "tls-min", ["1.2", "1.3"] as const);
  return {
    host: stringFlag(flags, "host")!,
    port: intFlag(flags, serveSpec, "port", 0, 65535),
    cert: readPemFile(certPath, "--cert"),
    key: readPemFile(keyPath, "--key"),
    minTlsVersion: tlsMin === "1.2" ? "TLSv1.2" : "TLSv1.3",
    clientCa: clientCaPath ? readPemFile(clientCaPath, "--client-ca") : undefined,
    allowClients,
    tlsFiles: { cert: certPath, key: keyPath, clientCa: clientCaPath },
    dataDir: stringFlag(flags, "data-dir")!,
    rotateEntries: intFlag(flags, serveSpec, "rotate-entries", 1, 1_000_000_000),
    rotateBytes: stringFlag(flags, "rotate-bytes") === undefined
      ? undefined
      : sizeFlag(flags, serveSpec, "rotate-bytes", 1024, 1024 ** 4),
    fsync: parseFsyncMode(stringFlag(flags, "fsync")!),
    maxFrameBytes: sizeFlag(flags, serveSpec, "max-frame-bytes", 1024, 256 * 1024 ** 2),
    maxBatchBytes: sizeFlag(flags, serveSpec, "max-batch-bytes", 1024, 1024 ** 3),
    maxEntryBytes: sizeFlag(flags, serveSpec, "max-entry-bytes", 64, 256 * 1024 ** 2),
    maxConnections: intFlag(flags, serveSpec, "max-connections", 1, 1_000_000),
    memoryTargetBytes: stringFlag(flags, "memory-target") === "0"
      ? 0
      : sizeFlag(flags, serveSpec, "memory-target", 32 * 1024 ** 2, 1024 ** 4),
    handshakeTimeoutMs: durationFlag(flags, serveSpec, "handshake-timeout", 100, 600_000),
    idleTimeoutMs: durationFlag(flags, serveSpec, "idle-timeout", 1000, 24 * 3_600_000),
    frameTimeoutMs: durationFlag(flags, serveSpec, "frame-timeout", 100, 3_600_000),
    rateLimit: {
      entriesPerSecond: stringFlag(flags, "rate-limit") === undefined
        ? undefined
        : intFlag(flags, serveSpec, "rate-limit", 1, 100_000_000),
      bytesPerSecond: stringFlag(flags, "rate-limit-bytes") === undefined
        ? undefined
        : sizeFlag(flags, serveSpec, "rate-limit-bytes", 1024, 1024 ** 4),
    },
  };
}

/** Where `serve` and `demo` keep the checkpoint key by default. */
export const DEFAULT_SIGNING_KEY = "keys/tlslog-checkpoint.key";
/** The checkpoint key's name in signatures. */
const SIGNING_KEY_NAME = "tlslog-checkpoint";

/**
 * Loads (or makes, on first start) the checkpoint signing key and writes its
 * verifier key next to it (`.pub`) and into the data directory, where
 * `tlslog verify` finds it when no --pubkey is given.
 */
export async function loadCheckpointSigner(keyPath: string, dataDir: string): Promise<NoteSigner> {
  const { signer, created } = await ensureSigningKey(keyPath, SIGNING_KEY_NAME);
  const pub = signer.verifierKey + "\n";
  await Deno.writeTextFile(keyPath.replace(/\.key$/, "") + ".pub", pub);
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(join(dataDir, VERIFIER_KEY_NAME), pub);
  if (created) console.error(`tlslog: made checkpoint signing key ${keyPath} (verifier key ${signer.verifierKey})`);
  return signer;
}

/** Checkpoint, lifecycle and encryption options from the serve flags (keys read, key made if missing). */
export async function evidenceOptionsFromFlags(
  flags: ParsedFlags,
  dataDir: string,
): Promise<Partial<CollectorOptions>> {
  const keyPath = stringFlag(flags, "encrypt-key");
  const retentionDays = stringFlag(flags, "retention");
  const retentionFiles = stringFlag(flags, "retention-files");
  const days = retentionDays === undefined ? undefined : Number(retentionDays);
  if (days !== undefined && !(Number.isFinite(days) && days > 0 && days <= 36_500)) {
    throw new UsageError(
      `--retention must be a number of days from 0 to 36500 (e.g. 30 or 0.5), got "${retentionDays}"`,
      "serve",
    );
  }
  const files = retentionFiles === undefined ? undefined : intFlag(flags, serveSpec, "retention-files", 2, 1e9);
  const interval = durationFlag(flags, serveSpec, "checkpoint-interval", 100, 24 * 3_600_000);
  const encryptKey = keyPath ? await readEncryptionKey(keyPath) : undefined;
  const signingKey = stringFlag(flags, "signing-key")!;
  const copyDir = stringFlag(flags, "checkpoint-copy");
  return {
    signer: await loadCheckpointSigner(signingKey, dataDir),
    origin: stringFlag(flags, "origin"),
    checkpointIntervalMs: interval,
    checkpointCopyDir: copyDir,
    compressRotated: flags.values["compress-rotated"] !== false,
    encryptKey,
    retention: { days, files },
    auditConfig: {
      data_dir: dataDir,
      compress_rotated: flags.values["compress-rotated"] !== false,
      encryption: encryptKey ? { cipher: "AES-256-GCM", key_id: encryptKey.id } : null,
      retention: { days: days ?? null, files: files ?? null },
      checkpoint_interval_ms: interval,
      checkpoint_copy: copyDir ?? null,
      signing_key: signingKey,
    },
  };
}

/** A running collector and dashboard. */
export interface Service {
  collector: Collector;
  /** Dashboard URL, or null when off. */
  dashboardUrl: string | null;
  close(): Promise<void>;
}

/** Starts the collector and, unless its port is 0, the dashboard. */
export async function startService(
  options: CollectorOptions,
  dashboardHost: string,
  dashboardPort: number,
  dashboardToken: string,
): Promise<Service> {
  const collector = await startCollector(options);
  let http: Deno.HttpServer | null = null;
  if (dashboardPort !== 0) {
    const app = createDashboardApp({
      token: dashboardToken,
      stats: () => collector.stats(),
      onAccess: (access) => collector.audit("dashboard_access", { ...access }),
    });
    try {
      // Deno.serve binds before it returns (and throws if it cannot).
      http = Deno.serve({ hostname: dashboardHost, port: dashboardPort, onListen: () => {} }, app.fetch);
    } catch (err) {
      await collector.close();
      throw new ListenError(
        `cannot start the dashboard on ${dashboardHost}:${dashboardPort}: ${(err as Error).message}`,
      );
    }
  }
  const addr = http?.addr as Deno.NetAddr | undefined;
  return {
    collector,
    dashboardUrl: addr ? `http://${addr.hostname}:${addr.port}/` : null,
    async close() {
      await collector.close();
      await http?.shutdown();
    },
  };
}

/**
 * Reloads the TLS material on SIGHUP and when one of its files changes
 * (written, replaced or renamed into place; changes are gathered for 300 ms
 * so that a certificate and key written one after the other load together).
 */
export function watchTlsFiles(collector: Collector, files: TlsFiles): { close(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reload = () => {
    clearTimeout(timer);
    timer = setTimeout(() => void collector.reloadTls(), 300);
  };
  const paths = [files.cert, files.key, files.clientCa].filter((p): p is string => p !== undefined).map((p) =>
    resolve(p)
  );
  const dirs = [...new Set(paths.map((p) => dirname(p)))];
  const watcher = Deno.watchFs(dirs, { recursive: false });
  void (async () => {
    try {
      for await (const event of watcher) {
        if (event.paths.some((p) => paths.includes(resolve(p)))) reload();
      }
    } catch {
      // closed
    }
  })();
  const onHup = () => reload();
  Deno.addSignalListener("SIGHUP", onHup);
  return {
    close() {
      clearTimeout(timer);
      Deno.removeSignalListener("SIGHUP", onHup);
      watcher.close();
    },
  };
}

/** Runs `tlslog serve`; resolves to the exit code after a graceful stop. */
export async function runServe(args: string[]): Promise<number> {
  const flags = parseFlags(serveSpec, args);
  if (flags.help) {
    console.log(formatHelp(serveSpec));
    return 0;
  }
  // Flag values first, so a bad one is a usage error even when a file is missing too.
  const guardMode = choiceFlag(
    flags,
    serveSpec,
    "require-deidentified",
    ["off", "reject", "quarantine", "redact"] as const,
  );
  const options = collectorOptionsFromFlags(flags);
  Object.assign(options, await evidenceOptionsFromFlags(flags, options.dataDir));
  options.auditConfig = {
    host: options.host,
    port: options.port,
    rotate_entries: options.rotateEntries,
    rotate_bytes: options.rotateBytes ?? null,
    fsync: stringFlag(flags, "fsync"),
    require_deidentified: guardMode,
    max_frame_bytes: options.maxFrameBytes,
    max_batch_bytes: options.maxBatchBytes,
    max_entry_bytes: options.maxEntryBytes,
    ...options.auditConfig,
  };
  if (guardMode !== "off") {
    const policyPath = stringFlag(flags, "policy");
    const policy = policyPath ? await loadPolicy(policyPath) : DEFAULT_POLICY;
    options.guard = createPrivacyGuard(guardMode, policy.detectors, ff1Paths(policy));
  }
  const print = flags.values.print === true;
  if (print) {
    options.onStored = (lines) => Deno.stdout.writeSync(lines);
  }
  const dashboardPort = intFlag(flags, serveSpec, "dashboard-port", 0, 65535);
  const givenToken = stringFlag(flags, "dashboard-token") ?? Deno.env.get("TLSLOG_DASHBOARD_TOKEN");
  if (givenToken !== undefined && givenToken.length < 16) {
    throw new UsageError("--dashboard-token must be at least 16 characters", "serve");
  }
  const dashboardToken = givenToken ?? generateDashboardToken();
  // Signals are caught from before start-up: a SIGTERM as soon as the port is open still stops gracefully.
  const stop = listenForStop();
  let service: Service;
  try {
    service = await startService(options, stringFlag(flags, "dashboard-host")!, dashboardPort, dashboardToken);
  } catch (err) {
    stop.dispose();
    throw err;
  }
  const { collector } = service;
  const line = `tlslog serve: listening on tls://${collector.hostname}:${collector.port} (protocol v1 and v2), ` +
    `dashboard ${service.dashboardUrl ?? "off"}, data in ${options.dataDir}`;
  if (print) console.error(line);
  else console.log(line);
  if (givenToken === undefined && service.dashboardUrl) {
    // Generated: shown once, here, so that whoever started the collector can open the dashboard.
    console.error(
      `tlslog serve: dashboard token ${dashboardToken} (open ${service.dashboardUrl}?token=${dashboardToken})`,
    );
  }
  const reloads = watchTlsFiles(collector, options.tlsFiles!);
  const signal = await waitForStopSignal(stop);
  reloads.close();
  console.error(`tlslog serve: ${signal}: finishing frames in flight`);
  await service.close();
  const s = collector.stats();
  console.error(`tlslog serve: stopped; ${s.entries_written} entries written to ${s.files_written} files`);
  return 0;
}
