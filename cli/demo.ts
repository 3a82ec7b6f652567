/**
 * `tlslog demo`: a collector, its dashboard and a stream of simulated
 * consultation logs into it, on built-in defaults. What `deno task start` runs.
 *
 * @module
 */
import { join } from "node:path";
import { defaultKeyPath, loadAnonKey } from "../client/anon_key.ts";
import { generateConsultations } from "../client/healthcare_source.ts";
import { createDeidentifier } from "../shared/deidentify.ts";
import { DEFAULT_POLICY } from "../shared/privacy_policy.ts";
import { Sender } from "../client/sender.ts";
import { connectTransport } from "../client/tls_transport.ts";
import { ALPN_V2 } from "../shared/protocol.ts";
import { readPemFile } from "../shared/pem_files.ts";
import { createPseudonymizer } from "../shared/pseudonymizer.ts";
import { type CommandSpec, formatHelp, intFlag, parseFlags, stringFlag } from "./flags.ts";
import { DEFAULT_SIGNING_KEY, loadCheckpointSigner, type Service, startService } from "./serve.ts";
import { listenForStop, waitForStopSignal } from "./stop_signal.ts";
import { generateDashboardToken } from "../dashboard/dashboard_app.ts";

/** The command's flags and help. */
export const demoSpec: CommandSpec = {
  name: "demo",
  summary: "Run a collector, its dashboard and a live stream of simulated consultation logs (Ctrl-C stops).",
  usage: "tlslog demo [flags]",
  flags: {
    certs: { type: "string", default: "certs", arg: "dir", help: "directory made by certs.sh" },
    port: { type: "string", default: "8443", help: "TLS port" },
    "dashboard-port": { type: "string", default: "8080", help: "dashboard port" },
    "data-dir": { type: "string", default: "./data", arg: "dir", help: "where the .jsonl files go" },
    rate: { type: "string", default: "5", help: "simulated entries per second" },
  },
  examples: ["sh certs.sh && tlslog demo"],
};

/** Runs `tlslog demo`; resolves to the exit code. */
export async function runDemo(args: string[]): Promise<number> {
  const flags = parseFlags(demoSpec, args);
  if (flags.help) {
    console.log(formatHelp(demoSpec));
    return 0;
  }
  const certs = stringFlag(flags, "certs")!;
  const rate = intFlag(flags, demoSpec, "rate", 1, 10_000);
  const dashboardToken = Deno.env.get("TLSLOG_DASHBOARD_TOKEN") ?? generateDashboardToken();
  const stop = listenForStop();
  let service: Service;
  try {
    service = await startService(
      {
        host: "127.0.0.1",
        port: intFlag(flags, demoSpec, "port", 0, 65535),
        cert: readPemFile(join(certs, "server.crt"), "--certs"),
        key: readPemFile(join(certs, "server.key"), "--certs"),
        dataDir: stringFlag(flags, "data-dir")!,
        rotateEntries: 10,
        maxFrameBytes: 1 << 20,
        maxBatchBytes: 16 << 20,
        maxEntryBytes: 1 << 20,
        signer: await loadCheckpointSigner(DEFAULT_SIGNING_KEY, stringFlag(flags, "data-dir")!),
      },
      "127.0.0.1",
      intFlag(flags, demoSpec, "dashboard-port", 0, 65535),
      dashboardToken,
    );
  } catch (err) {
    stop.dispose();
    throw err;
  }
  const { collector } = service;
  const loaded = loadAnonKey(undefined, Deno.env.get("TLSLOG_ANON_KEY"), defaultKeyPath());
  const pseudonymizer = createPseudonymizer(loaded.key);
  const deidentifier = createDeidentifier(DEFAULT_POLICY, { pseudonymizer });
  const sender = new Sender({
    connect: () =>
      connectTransport({
        host: "localhost",
        port: collector.port,
        caCert: readPemFile(join(certs, "ca.crt"), "--certs"),
        alpnProtocols: [ALPN_V2],
      }),
    lingerMs: 100,
  });
  console.log(`tlslog demo: collector on tls://127.0.0.1:${collector.port}, data in ${stringFlag(flags, "data-dir")}`);
  console.log(
    `tlslog demo: dashboard at ${service.dashboardUrl ? `${service.dashboardUrl}?token=${dashboardToken}` : "off"}`,
  );
  console.log(`tlslog demo: sending ${rate} simulated consultation logs per second; Ctrl-C stops`);
  let running = true;
  const stream = (async () => {
    while (running) {
      const logs = generateConsultations(rate, Math.random, Date.now());
      const entries = logs.map((l) =>
        JSON.stringify({ ...deidentifier.apply({ ...l }), anon_key_id: pseudonymizer.keyId })
      );
      await sender.add(entries, "demo", logs.map(() => 0));
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  const signal = await waitForStopSignal(stop);
  running = false;
  await stream;
  const summary = await sender.finish();
  await service.close();
  console.log(`tlslog demo: ${signal}; ${summary.acknowledged} entries sent and stored`);
  return 0;
}
