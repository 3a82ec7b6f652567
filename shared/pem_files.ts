/**
 * Loading of PEM certificates and keys with errors that say which flag and
 * file were at fault and what to do.
 *
 * @module
 */

/** Raised when a certificate or key file is missing, unreadable or not PEM. */
export class PemFileError extends Error {
  override name = "PemFileError";
}

/**
 * Reads a PEM file given to `flag`.
 *
 * @throws {PemFileError} when it cannot be read or holds no PEM block
 */
export function readPemFile(path: string, flag: string): string {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    const hint = err instanceof Deno.errors.NotFound ? " (run ./certs.sh to create a test CA and certificates)" : "";
    throw new PemFileError(`cannot read ${flag} ${path}: ${(err as Error).message}${hint}`);
  }
  if (!/-----BEGIN [A-Z0-9 ]+-----/.test(text)) {
    throw new PemFileError(`${flag} ${path} holds no PEM block`);
  }
  return text;
}
