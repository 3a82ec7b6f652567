/**
 * What `send`, `healthcare` and `demo` share: the connection flags, the
 * sender built from them, progress on a terminal, and the closing summary.
 *
 * @module
 */
import { existsSync } from "node:fs";
import { connectTransport, type TransportOptions } from "../client/tls_transport.ts";
import { Sender, type SenderEvent, type SenderOptions, type SendSummary } from "../client/sender.ts";
import { ALPN_V2 } from "../shared/protocol.ts";
import { readPemFile } from "../shared/pem_files.ts";
import { defaultKeyPath, loadAnonKey } from "../client/anon_key.ts";
import { createDeidentifier, type Deidentifier } from "../shared/deidentify.ts";
import { createFf1Cipher } from "../shared/ff1_cipher.ts";
import { type CompiledPolicy, loadPolicy } from "../shared/privacy_policy.ts";
import { createPseudonymizer, parseKey } from "../shared/pseudonymizer.ts";
import {
  type CommandSpec,
  durationFlag,
  type FlagSpec,
  intFlag,
  type ParsedFlags,
  stringFlag,
  UsageError,
} from "./flags.ts";

/** The default CA: $TLSLOG_CA, else certs/ca.crt when it exists. */
export function defaultCaPath(): string | undefined {
  const env = Deno.env.get("TLSLOG_CA");
  if (env) return env;
  return existsSync("certs/ca.crt") ? "certs/ca.crt" : undefined;
}

/** Flags of every command that connects to a collector. */
export const CONNECT_FLAGS: Record<string, FlagSpec> = {
  host: { type: "string", default: "localhost", help: "collector host name (checked against its certificate)" },
  port: { type: "string", default: "8443", help: "collector port" },
  ca: {
    type: "string",
    arg: "file",
    help:
      "CA certificate to verify the collector with (default: $TLSLOG_CA, else certs/ca.crt if present, else system roots)",
  },
  insecure: { type: "boolean", help: "DANGEROUS: do not verify the collector's certificate or host name" },
  cert: { type: "string", arg: "file", help: "client certificate (PEM) for a collector that requires mutual TLS" },
  key: { type: "string", arg: "file", help: "the client certificate's private key (PEM)" },
};

/** Flags of commands that de-identify entries before sending them. */
export const POLICY_FLAGS: Record<string, FlagSpec> = {
  policy: {
    type: "string",
    arg: "file",
    help: "privacy policy (JSON): fields to pseudonymise, drop, encrypt; detectors",
  },
  "anon-key-file": {
    type: "string",
    arg: "file",
    help: "pseudonymisation key (hex or base64, >= 16 bytes); else $TLSLOG_ANON_KEY; else one is created",
  },
  "ff1-key-file": {
    type: "string",
    arg: "file",
    help: "FF1 key (16, 24 or 32 bytes, hex or base64) for the policy's ff1 fields",
  },
};

/** A de-identification step ready to apply, and what to say about it. */
export interface LoadedDeidentifier {
  deidentifier: Deidentifier;
  keyId: string;
  policySource: string;
}

/**
 * Builds the de-identifier from `--policy` (or `fallback` when the flag is
 * absent; none when both are), with its keys. Refuses a bad policy or a
 * missing FF1 key at start-up.
 */
export async function deidentifierFromFlags(
  flags: ParsedFlags,
  command: string,
  fallback?: CompiledPolicy,
): Promise<LoadedDeidentifier | undefined> {
  const path = stringFlag(flags, "policy");
  const policy = path ? await loadPolicy(path) : fallback;
  if (!policy) return undefined;
  const loaded = loadAnonKey(stringFlag(flags, "anon-key-file"), Deno.env.get("TLSLOG_ANON_KEY"), defaultKeyPath());
  if (loaded.createdPath) {
    console.error(
      `${command}: created a new pseudonymisation key at ${loaded.createdPath} (mode 0600); keep it to link tokens across runs`,
    );
  }
  const pseudonymizer = createPseudonymizer(loaded.key);
  const ff1Path = stringFlag(flags, "ff1-key-file");
  const ff1 = ff1Path ? createFf1Cipher(parseKey(Deno.readTextFileSync(ff1Path))) : undefined;
  return {
    deidentifier: createDeidentifier(policy, { pseudonymizer, ff1 }),
    keyId: pseudonymizer.keyId,
    policySource: policy.source,
  };
}

/** Summary rows of a de-identifier's counters. */
export function deidentifySummary(d: LoadedDeidentifier): [string, string | number][] {
  const s = d.deidentifier.stats;
  const found = Object.entries(s.redactions).filter(([, v]) => v > 0);
  const redactions = found.map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  return [
    ["policy", d.policySource],
    ["key id", d.keyId],
    ["fields pseudonymised", s.pseudonymized],
    ["fields dropped", s.dropped],
    ["redactions", redactions],
  ];
}

/** Flags of commands that send entries. */
export const SEND_FLAGS: Record<string, FlagSpec> = {
  ...CONNECT_FLAGS,
  "batch-size": { type: "string", default: "1000", help: "entries per batch" },
  "max-in-flight": { type: "string", default: "16", help: "batches sent before their acks return" },
  "gzip-level": { type: "string", default: "1", help: "gzip level 1 (fastest) to 9 (smallest)" },
  retries: { type: "string", default: "10", help: "failed connection attempts in a row before giving up" },
  "retry-max-delay": { type: "string", default: "30s", help: "cap of the exponential backoff (1 s, 2 s, 4 s ...)" },
  rate: {
    type: "string",
    arg: "entries/s",
    help: "send at most this many entries per second on average (e.g. 500 or 0.5); the input is slowed, " +
      "nothing is dropped; bursts of one batch or 0.1 s worth (default: no limit)",
  },
};

/** The highest --rate, in entries per second. */
export const MAX_RATE = 10_000_000;

/** Reads --rate (entries per second, fractions allowed), or undefined when it is not given. */
export function rateFlag(flags: ParsedFlags, spec: CommandSpec): number | undefined {
  const raw = stringFlag(flags, "rate");
  if (raw === undefined) return undefined;
  const n = /^(\d+(\.\d*)?|\.\d+)$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!(n > 0 && n <= MAX_RATE)) {
    throw new UsageError(
      `--rate must be a number of entries per second above 0 and at most ${
        MAX_RATE.toLocaleString("en-US")
      } (e.g. 500 or 0.5), got "${raw}"`,
      spec.name,
    );
  }
  return n;
}

/** Builds transport options from the connection flags; warns loudly for --insecure. */
export function transportFromFlags(flags: ParsedFlags, spec: CommandSpec, warn: (m: string) => void): TransportOptions {
  const insecure = flags.values.insecure === true;
  const caPath = stringFlag(flags, "ca") ?? (insecure ? undefined : defaultCaPath());
  if (insecure) {
    warn(
      "WARNING: --insecure: the collector's certificate and host name are NOT verified; " +
        "anyone on the network path can read and alter these logs.",
    );
  }
  const certPath = stringFlag(flags, "cert");
  const keyPath = stringFlag(flags, "key");
  if ((certPath === undefined) !== (keyPath === undefined)) {
    throw new UsageError("--cert and --key go together: give both or neither", spec.name);
  }
  return {
    host: stringFlag(flags, "host")!,
    port: intFlag(flags, spec, "port", 1, 65535),
    caCert: caPath && !insecure ? readPemFile(caPath, "--ca") : undefined,
    insecure,
    alpnProtocols: [ALPN_V2],
    clientCert: certPath ? readPemFile(certPath, "--cert") : undefined,
    clientKey: keyPath ? readPemFile(keyPath, "--key") : undefined,
  };
}

/** Builds a sender from the send flags. */
export function senderFromFlags(
  flags: ParsedFlags,
  spec: CommandSpec,
  onEvent: (e: SenderEvent) => void,
  warn: (m: string) => void,
  extra: Partial<SenderOptions> = {},
): Sender {
  const transport = transportFromFlags(flags, spec, warn);
  return new Sender({
    connect: () => connectTransport(transport),
    batchSize: intFlag(flags, spec, "batch-size", 1, 100_000),
    maxInFlight: intFlag(flags, spec, "max-in-flight", 1, 1024),
    gzipLevel: intFlag(flags, spec, "gzip-level", 1, 9),
    retries: intFlag(flags, spec, "retries", 0, 1_000_000),
    backoff: { maxMs: durationFlag(flags, spec, "retry-max-delay", 1000, 3_600_000) },
    rateLimit: rateFlag(flags, spec),
    onEvent,
    ...extra,
  });
}

/** Reports sender events on stderr, and a progress line on a terminal. */
export interface EventReporter {
  onEvent: (e: SenderEvent) => void;
  /** Shows progress of `sender` until {@linkcode EventReporter.stop}. */
  track: (sender: Sender) => void;
  stop: () => void;
}

/** Prints sender events to stderr, with a progress line on a terminal. */
export function reportEvents(command: string): EventReporter {
  let tracked: Sender | undefined;
  const tty = Deno.stderr.isTerminal();
  const started = performance.now();
  let shown = false;
  const encoder = new TextEncoder();
  const timer = tty
    ? setInterval(() => {
      const s = tracked?.summary;
      if (!s) return;
      const secs = (performance.now() - started) / 1000;
      const line = `\r${command}: ${s.entries.toLocaleString("en-US")} read, ` +
        `${s.acknowledged.toLocaleString("en-US")} acknowledged, ${
          Math.round(s.acknowledged / secs).toLocaleString("en-US")
        }/s${s.rateLimit === null ? "" : `; ${formatRateLimit(s)}`}`;
      Deno.stderr.writeSync(encoder.encode(line + "\x1b[K"));
      shown = true;
    }, 500)
    : undefined;
  const clearLine = () => {
    if (shown) Deno.stderr.writeSync(encoder.encode("\r\x1b[K"));
    shown = false;
  };
  const throttleReasons = new Set<string>();
  return {
    track(sender) {
      tracked = sender;
    },
    onEvent(e) {
      clearLine();
      if (e.type === "retry") {
        console.error(
          `${command}: connection failed (${e.error}); retry ${e.attempt} in ${(e.delayMs / 1000).toFixed(1)} s`,
        );
      } else if (e.type === "dropped") {
        console.error(`${command}: dropped ${e.entries} entries: ${e.reason}`);
      } else if (e.type === "throttled") {
        // Said once per reason: a client held at its limit would otherwise print a line per batch.
        if (!throttleReasons.has(e.reason)) {
          throttleReasons.add(e.reason);
          console.error(
            `${command}: the collector slows this sender down: ${e.reason} (waits ${e.waitMs} ms and more)`,
          );
        }
      } else if (e.type === "rejected" && e.code === "invalid_entry") {
        console.error(`${command}: ${e.source}:${e.line}: skipped (found by the collector): ${e.error}`);
      } else if (e.type === "rejected") {
        console.error(`${command}: ${e.source}:${e.line}: rejected by server: ${e.error}`);
      } else if (e.attempt > 0) {
        console.error(`${command}: connected after ${e.attempt} failed attempts; resending unacknowledged batches`);
      }
    },
    stop() {
      clearInterval(timer);
      clearLine();
    },
  };
}

/** `rate limit 1,000 entries/s: waited 4.2 s in all`, for a sender with a rate limit. */
export function formatRateLimit(summary: SendSummary, label = true): string {
  const rate = (summary.rateLimit ?? 0).toLocaleString("en-US", { maximumFractionDigits: 3 });
  const text = `${rate} entries/s: waited ${(summary.rateLimitWaitMs / 1000).toFixed(1)} s in all`;
  return label ? `rate limit ${text}` : text;
}

/** The closing summary, one `name value` row per line. */
export function formatSummary(summary: SendSummary, seconds: number, extra: [string, string | number][] = []): string {
  const ratio = summary.rawBytes === 0 ? 0 : summary.compressedBytes / summary.rawBytes;
  const rows: [string, string | number][] = [
    ["entries", summary.entries],
    ["resumed from spool", summary.resumedFromSpool],
    ["acknowledged", summary.acknowledged],
    ["rejected by server", summary.rejected.filter((r) => r.code !== "invalid_entry").length],
    ...extra,
    ["raw bytes", summary.rawBytes],
    ["compressed bytes", summary.compressedBytes],
    ["compression ratio", ratio.toFixed(3)],
    ["batches", summary.batches],
    ["batches resent", summary.resentBatches],
    ["duplicates suppressed", summary.duplicates],
    ["retries", summary.retries],
    ["dropped (spool full)", summary.dropped],
    ["spool entries", summary.spoolEntries],
    ["spool bytes", summary.spoolBytes],
    ["oldest unacked age", summary.oldestUnackedMs === null ? "-" : `${(summary.oldestUnackedMs / 1000).toFixed(1)} s`],
    ...(summary.rateLimit === null ? [] : [["rate limit", formatRateLimit(summary, false)] as [string, string]]),
    ["seconds", seconds.toFixed(2)],
    ["entries/s", Math.round(summary.acknowledged / Math.max(seconds, 1e-3))],
  ];
  return "summary:\n" +
    rows.map(([k, v]) => `  ${k.padEnd(22)} ${typeof v === "number" ? v.toLocaleString("en-US") : v}`).join("\n");
}
