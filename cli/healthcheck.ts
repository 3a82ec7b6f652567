/**
 * `tlslog healthcheck`: a TLS handshake and a protocol ping, within a
 * deadline. Exit 0 healthy, 1 not. The Docker HEALTHCHECK.
 *
 * @module
 */
import { readAnswers } from "../client/sender.ts";
import { connectTransport } from "../client/tls_transport.ts";
import { encodeFrame } from "../shared/frame_codec.ts";
import { ALPN_V2, encodePing } from "../shared/protocol.ts";
import { CONNECT_FLAGS, transportFromFlags } from "./client_common.ts";
import { type CommandSpec, durationFlag, formatHelp, parseFlags } from "./flags.ts";

/** The command's flags and help. */
export const healthcheckSpec: CommandSpec = {
  name: "healthcheck",
  summary: "Check that a collector completes a TLS handshake and answers a ping. Exit 0 healthy, 1 not.",
  usage: "tlslog healthcheck [flags]",
  flags: {
    ...CONNECT_FLAGS,
    timeout: { type: "string", default: "3s", help: "give up after this long" },
  },
  examples: ["tlslog healthcheck --ca certs/ca.crt --port 8443"],
};

/** Raised when the collector's answer is not the expected PONG. */
export class UnhealthyError extends Error {
  override name = "UnhealthyError";
}

async function ping(transportOptions: ReturnType<typeof transportFromFlags>, deadlineMs: number): Promise<number> {
  const started = performance.now();
  const { conn, alpnProtocol } = await connectTransport({ ...transportOptions, timeoutMs: deadlineMs });
  try {
    if (alpnProtocol !== ALPN_V2) throw new UnhealthyError(`collector did not negotiate ${ALPN_V2}`);
    const nonce = crypto.getRandomValues(new Uint32Array(1))[0]!;
    await conn.write(encodeFrame(encodePing(nonce)));
    for await (const message of readAnswers(conn)) {
      if (message.type === "nack") throw new UnhealthyError(`collector refused the ping: ${message.nack.error}`);
      if (message.type !== "pong" || message.nonce !== nonce) {
        throw new UnhealthyError(`collector answered the ping with ${message.type}`);
      }
      return performance.now() - started;
    }
    throw new UnhealthyError("collector closed the connection before answering the ping");
  } finally {
    conn.close();
  }
}

/** Runs `tlslog healthcheck`; resolves to the exit code. */
export async function runHealthcheck(args: string[]): Promise<number> {
  const flags = parseFlags(healthcheckSpec, args);
  if (flags.help) {
    console.log(formatHelp(healthcheckSpec));
    return 0;
  }
  const timeoutMs = durationFlag(flags, healthcheckSpec, "timeout", 100, 600_000);
  const options = transportFromFlags(flags, healthcheckSpec, (m) => console.error(m));
  const where = `${options.host}:${options.port}`;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnhealthyError(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  const attempt = ping(options, timeoutMs);
  try {
    const ms = await Promise.race([attempt, deadline]);
    console.log(`healthy: ${where} answered the ping in ${ms.toFixed(1)} ms`);
    return 0;
  } catch (err) {
    attempt.catch(() => {});
    console.error(`unhealthy: ${where}: ${(err as Error).message}`);
    return 1;
  } finally {
    clearTimeout(timer);
  }
}
