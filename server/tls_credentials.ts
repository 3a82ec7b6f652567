/**
 * The collector's TLS material: checking a certificate, key and client CA
 * before they are put in service (at start and on every reload), reading a
 * client's identity from its certificate, and matching it against
 * `--allow-clients`.
 *
 * `server.setSecureContext()` accepts garbage without a word in Deno's
 * node:tls, so every PEM is parsed here first: the certificate and CA with
 * X509Certificate, the key with createPrivateKey, and the pair with
 * checkPrivateKey. A replacement that fails any of these is refused and the
 * material in service stays.
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";

/** Raised for a certificate, key or CA that cannot be used; the message names which and why. */
export class TlsCredentialsError extends Error {
  override name = "TlsCredentialsError";
}

/** Paths of the TLS files, for reloading. */
export interface TlsFiles {
  cert: string;
  key: string;
  clientCa?: string;
}

/** Checked TLS material, ready for `tls.createServer` / `setSecureContext`. */
export interface TlsMaterial {
  cert: string;
  key: string;
  clientCa?: string;
  /** When the server certificate expires, ms since the epoch. */
  certExpiresAt: number;
  /** The server certificate's subject, one line. */
  certSubject: string;
}

/**
 * Checks PEM texts: the certificate parses, the key parses and belongs to it,
 * the client CA parses.
 *
 * @throws {TlsCredentialsError}
 */
export function checkTlsMaterial(pem: { cert: string; key: string; clientCa?: string }): TlsMaterial {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pem.cert);
  } catch (err) {
    throw new TlsCredentialsError(`the server certificate is not a PEM certificate: ${(err as Error).message}`);
  }
  let key;
  try {
    key = createPrivateKey(pem.key);
  } catch (err) {
    throw new TlsCredentialsError(`the server key is not a PEM private key: ${(err as Error).message}`);
  }
  if (!x509.checkPrivateKey(key)) {
    throw new TlsCredentialsError("the server key does not belong to the server certificate");
  }
  if (pem.clientCa !== undefined) {
    try {
      new X509Certificate(pem.clientCa);
    } catch (err) {
      throw new TlsCredentialsError(`the client CA is not a PEM certificate: ${(err as Error).message}`);
    }
  }
  const expires = Date.parse(x509.validTo);
  return {
    cert: pem.cert,
    key: pem.key,
    clientCa: pem.clientCa,
    certExpiresAt: expires,
    certSubject: x509.subject.replaceAll("\n", ", "),
  };
}

/**
 * Reads and checks the TLS files.
 *
 * @throws {TlsCredentialsError} naming the file that cannot be read or used
 */
export async function readTlsFiles(files: TlsFiles): Promise<TlsMaterial> {
  const read = async (path: string, what: string) => {
    try {
      return await Deno.readTextFile(path);
    } catch (err) {
      throw new TlsCredentialsError(`cannot read ${what} ${path}: ${(err as Error).message}`);
    }
  };
  const cert = await read(files.cert, "the server certificate");
  const key = await read(files.key, "the server key");
  const clientCa = files.clientCa === undefined ? undefined : await read(files.clientCa, "the client CA");
  return checkTlsMaterial({ cert, key, clientCa });
}

/** A client's identity from its certificate. */
export interface ClientIdentity {
  /** Subject common name, or null. */
  cn: string | null;
  /** Subject alternative names as `DNS:x`, `URI:y`, `email:z`, `IP Address:…`. */
  san: string[];
}

/** The identity of a mutual-TLS peer, or null when it presented no certificate. */
export function peerIdentity(socket: TLSSocket): ClientIdentity | null {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return null;
  const cn = (cert.subject as { CN?: string | string[] } | undefined)?.CN;
  const san = typeof cert.subjectaltname === "string"
    ? cert.subjectaltname.split(",").map((s) => s.trim()).filter(Boolean)
    : [];
  return { cn: Array.isArray(cn) ? cn[0] ?? null : cn ?? null, san };
}

/** The identity as one short string for logs and the audit trail: the CN, else the first SAN. */
export function identityName(id: ClientIdentity): string {
  return id.cn ?? id.san[0] ?? "(no name)";
}

/**
 * Whether `id` may publish under `allow`: each pattern matches the CN or a
 * SAN value exactly (`app1`, `DNS:app1.example` or just `app1.example`), or,
 * with a leading `*.`, any name ending in the rest (`*.clinic.example`).
 */
export function identityAllowed(id: ClientIdentity, allow: readonly string[]): boolean {
  const names = [id.cn, ...id.san, ...id.san.map((s) => s.slice(s.indexOf(":") + 1))].filter(
    (n): n is string => typeof n === "string" && n !== "",
  );
  return allow.some((pattern) =>
    pattern.startsWith("*.")
      ? names.some((n) => n.endsWith(pattern.slice(1)) && n.length > pattern.length - 1)
      : names.includes(pattern)
  );
}
