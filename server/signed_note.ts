/**
 * C2SP signed notes (https://c2sp.org/signed-note) and checkpoints
 * (https://c2sp.org/tlog-checkpoint), Ed25519 keys only.
 *
 * A signed note is a text (UTF-8, ending in a newline, no empty lines, no
 * control characters other than newline), a blank line, and one or more
 * signature lines `— <key name> <base64(key ID || signature)>`. The key ID is
 * the first 4 bytes of SHA-256(key name || "\n" || 0x01 || public key), and a
 * verifier key is published as `<name>+<key ID hex>+<base64(0x01 || public key)>`.
 *
 * A checkpoint is a note text with the log's origin, its size, the base64 root
 * hash and optional extension lines.
 *
 * The format matches golang.org/x/mod/sumdb/note, so Go-ecosystem verifiers
 * and witnesses accept the notes signed here, and the reverse.
 *
 * @module
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { dirname } from "node:path";
import { concatBytes, writeAll } from "../shared/bytes.ts";
import { syncDir } from "./commit_log.ts";
import { toHex } from "./entry_chain.ts";

/** Raised for a malformed note, checkpoint, key name, key file or verifier key. */
export class NoteError extends Error {
  override name = "NoteError";
}

/** Raised when a well-formed note carries no valid signature by the expected key. */
export class NoteSignatureError extends Error {
  override name = "NoteSignatureError";
}

/** Signs note texts with one Ed25519 key. */
export interface NoteSigner {
  /** Key name, as it appears in signature lines. */
  readonly name: string;
  /** The 4-byte key ID. */
  readonly keyId: Uint8Array;
  /** Verifier key text, `<name>+<key ID hex>+<base64(0x01 || public key)>`, to hand to verifiers. */
  readonly verifierKey: string;
  /**
   * Signs a note text and returns the signed note (text, blank line, one signature line).
   *
   * @throws {NoteError} if `text` is not a valid note text
   */
  sign(text: string): string;
}

/** Checks signatures by one key. */
export interface NoteVerifier {
  /** Key name, as it appears in signature lines. */
  readonly name: string;
  /** The 4-byte key ID. */
  readonly keyId: Uint8Array;
  /** Whether `signature` (without the key ID) is a valid signature of `message` by this key. */
  verify(message: Uint8Array, signature: Uint8Array): boolean;
}

/** A transparency log checkpoint: the note text a log signs. */
export interface Checkpoint {
  /** Identifies the log, e.g. `example.com/log`. */
  origin: string;
  /** Number of entries in the tree. */
  size: number;
  /** Root hash of the tree, 32 bytes. */
  hash: Uint8Array;
  /** Extension lines after the hash, each non-empty. */
  extensions: string[];
}

const encoder = new TextEncoder();
/** Signature lines start with an em dash (U+2014) and a space. */
const SIG_PREFIX = "\u2014 ";
const ALG_ED25519 = 0x01;
const ED25519_KEY_BYTES = 32;
const ED25519_SIG_BYTES = 64;
const KEY_ID_BYTES = 4;
const HASH_BYTES = 32;
/** As in the Go implementation: more signature lines than this make a note malformed. */
const MAX_SIGNATURES = 100;

/** Standard, padded base64. */
export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Decodes standard, padded base64; null unless `text` is exactly the canonical encoding of the result. */
export function fromBase64(text: string): Uint8Array | null {
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return toBase64(bytes) === text ? bytes : null;
}

/** `U+XXXX` for a character, for error messages. */
function codePoint(c: string): string {
  return "U+" + c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
}

/** Key names: non-empty, no whitespace, no control characters, no "+". */
const KEY_NAME = /^[^\s\p{Cc}+]+$/u;
/** The first ASCII control character (U+0000 to U+001F, U+007F) in a line, if any. */
function controlChar(line: string): string | undefined {
  for (const c of line) {
    const code = c.charCodeAt(0);
    if (code < 0x20 || code === 0x7f) return c;
  }
  return undefined;
}

function checkKeyName(name: string, where: string): void {
  if (!KEY_NAME.test(name) || !name.isWellFormed()) {
    throw new NoteError(`${where}: key name must be non-empty without whitespace or "+", got ${JSON.stringify(name)}`);
  }
}

/** First 4 bytes of SHA-256(name || "\n" || 0x01 || public key). */
function computeKeyId(name: string, publicKey: Uint8Array): Uint8Array {
  const digest = createHash("sha256").update(
    concatBytes([encoder.encode(name + "\n"), Uint8Array.of(ALG_ED25519), publicKey]),
  )
    .digest();
  return new Uint8Array(digest.subarray(0, KEY_ID_BYTES));
}

/**
 * Checks note text rules: non-empty, ends in a newline, no empty lines, no
 * control characters other than newline, well-formed Unicode.
 */
function checkText(text: string, what: string): void {
  if (text === "") throw new NoteError(`${what} is empty`);
  if (!text.endsWith("\n")) throw new NoteError(`${what} must end with a newline`);
  if (!text.isWellFormed()) throw new NoteError(`${what} is not valid UTF-8 (lone surrogate)`);
  const lines = text.slice(0, -1).split("\n");
  lines.forEach((line, i) => {
    if (line === "") throw new NoteError(`${what} line ${i + 1} is empty`);
    const control = controlChar(line);
    if (control !== undefined) {
      throw new NoteError(`${what} line ${i + 1} contains control character ${codePoint(control)}`);
    }
  });
}

/** Fresh Ed25519 private key, PKCS#8 PEM. */
export function newSigningKeyPem(): string {
  const { privateKey } = generateKeyPairSync("ed25519");
  return privateKey.export({ type: "pkcs8", format: "pem" }) as string;
}

/** Raw 32-byte Ed25519 public key of a key object. */
function rawPublicKey(key: KeyObject): Uint8Array {
  const jwk = createPublicKey(key).export({ format: "jwk" });
  const raw = fromBase64(base64urlToStd(jwk.x ?? ""));
  if (raw === null || raw.length !== ED25519_KEY_BYTES) throw new NoteError("cannot extract the Ed25519 public key");
  return raw;
}

function base64urlToStd(s: string): string {
  const std = s.replaceAll("-", "+").replaceAll("_", "/");
  return std + "=".repeat((4 - std.length % 4) % 4);
}

/**
 * Signer for an Ed25519 private key in PEM (PKCS#8) form.
 *
 * @throws {NoteError} for an unreadable PEM, a key that is not Ed25519, or a bad key name
 */
export function createSigner(privateKeyPem: string, name: string): NoteSigner {
  checkKeyName(name, "signer");
  let key: KeyObject;
  try {
    key = createPrivateKey(privateKeyPem);
  } catch (e) {
    throw new NoteError(`signer ${name}: cannot read the private key PEM: ${e instanceof Error ? e.message : e}`);
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new NoteError(`signer ${name}: private key must be Ed25519, got ${key.asymmetricKeyType ?? "unknown"}`);
  }
  const publicKey = rawPublicKey(key);
  const keyId = computeKeyId(name, publicKey);
  const verifierKey = `${name}+${toHex(keyId)}+${toBase64(concatBytes([Uint8Array.of(ALG_ED25519), publicKey]))}`;
  return {
    name,
    keyId,
    verifierKey,
    sign(text: string): string {
      checkText(text, "note text");
      const signature = new Uint8Array(sign(null, encoder.encode(text), key));
      return `${text}\n${SIG_PREFIX}${name} ${toBase64(concatBytes([keyId, signature]))}\n`;
    },
  };
}

/**
 * Parses a verifier key, `<name>+<key ID as 8 lowercase hex>+<base64(0x01 || 32-byte public key)>`.
 * Surrounding whitespace is ignored.
 *
 * @throws {NoteError} for a bad format, an algorithm other than Ed25519, a key of the wrong length, or a key ID that
 *   does not match the name and key
 */
export function parseVerifierKey(vkey: string): NoteVerifier {
  const text = vkey.trim();
  const parts = text.split("+");
  // The base64 key may itself contain "+": split off only the first two fields.
  const [name, idHex] = parts;
  if (parts.length < 3 || name === undefined || idHex === undefined) {
    throw new NoteError(`verifier key: expected <name>+<key ID>+<key>, got ${JSON.stringify(text)}`);
  }
  checkKeyName(name, "verifier key");
  if (!/^[0-9a-f]{8}$/.test(idHex)) {
    throw new NoteError(`verifier key ${name}: key ID must be 8 lowercase hex digits, got ${JSON.stringify(idHex)}`);
  }
  const encoded = parts.slice(2).join("+");
  const keyBytes = fromBase64(encoded);
  if (keyBytes === null) {
    throw new NoteError(`verifier key ${name}: key is not valid base64: ${JSON.stringify(encoded)}`);
  }
  if (keyBytes[0] !== ALG_ED25519) {
    throw new NoteError(
      `verifier key ${name}: unsupported algorithm byte ${keyBytes[0] ?? "(none)"}, want 1 (Ed25519)`,
    );
  }
  if (keyBytes.length !== 1 + ED25519_KEY_BYTES) {
    throw new NoteError(
      `verifier key ${name}: Ed25519 key must be ${ED25519_KEY_BYTES} bytes, got ${keyBytes.length - 1}`,
    );
  }
  const publicKeyBytes = keyBytes.subarray(1);
  const keyId = computeKeyId(name, publicKeyBytes);
  if (toHex(keyId) !== idHex) {
    throw new NoteError(`verifier key ${name}: key ID ${idHex} does not match the name and key (want ${toHex(keyId)})`);
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: toBase64(publicKeyBytes).replaceAll("+", "-").replaceAll("/", "_") },
      format: "jwk",
    });
  } catch (e) {
    throw new NoteError(`verifier key ${name}: invalid Ed25519 public key: ${e instanceof Error ? e.message : e}`);
  }
  return {
    name,
    keyId,
    verify(message: Uint8Array, signature: Uint8Array): boolean {
      if (signature.length !== ED25519_SIG_BYTES) return false;
      try {
        return verify(null, message, publicKey, signature);
      } catch {
        return false;
      }
    },
  };
}

/**
 * Verifies a signed note and returns its text.
 *
 * Signature lines by other keys (another name or key ID) are ignored. Every
 * signature line by `verifier`'s name and key ID must verify, as in the Go
 * implementation: a line for that key that does not verify is an error even if
 * another one does.
 *
 * @throws {NoteError} for a malformed note (text rules, missing blank line, malformed signature line, more than 100
 *   signature lines)
 * @throws {NoteSignatureError} when no signature line by the key verifies: none is present, or one is and fails
 */
export function openNote(signedNote: string, verifier: NoteVerifier): string {
  const split = signedNote.lastIndexOf("\n\n");
  if (split < 0) throw new NoteError("signed note: no blank line between the text and the signatures");
  const text = signedNote.slice(0, split + 1);
  const sigBlock = signedNote.slice(split + 2);
  if (sigBlock === "") throw new NoteError("signed note: no signature lines after the blank line");
  if (!sigBlock.endsWith("\n")) throw new NoteError("signed note: must end with a newline");
  checkText(text, "signed note text");
  const textLines = text.split("\n").length - 1;
  const sigLines = sigBlock.slice(0, -1).split("\n");
  if (sigLines.length > MAX_SIGNATURES) {
    throw new NoteError(`signed note: ${sigLines.length} signature lines, at most ${MAX_SIGNATURES} allowed`);
  }
  const wantId = toHex(verifier.keyId);
  const message = encoder.encode(text);
  let verified = false;
  sigLines.forEach((line, i) => {
    const where = `signed note line ${textLines + 2 + i}`;
    if (!line.startsWith(SIG_PREFIX)) throw new NoteError(`${where}: signature line must start with "— "`);
    const rest = line.slice(SIG_PREFIX.length);
    const space = rest.indexOf(" ");
    if (space < 0) throw new NoteError(`${where}: signature line must be "— <key name> <base64>"`);
    const name = rest.slice(0, space);
    checkKeyName(name, where);
    const blob = fromBase64(rest.slice(space + 1));
    if (blob === null || blob.length <= KEY_ID_BYTES) {
      throw new NoteError(`${where}: signature must be base64 of a key ID and a signature`);
    }
    if (name !== verifier.name || toHex(blob.subarray(0, KEY_ID_BYTES)) !== wantId) return;
    if (!verifier.verify(message, blob.subarray(KEY_ID_BYTES))) {
      throw new NoteSignatureError(
        `signature by key ${name} (key ID ${wantId}) on ${where} does not verify: the note was edited or the ` +
          `signature forged`,
      );
    }
    verified = true;
  });
  if (!verified) {
    throw new NoteSignatureError(`signed note has no signature by key ${verifier.name} (key ID ${wantId}): absent`);
  }
  return text;
}

/**
 * Formats a checkpoint as note text (ending in a newline), ready to sign.
 *
 * @throws {NoteError} for an empty origin, a size that is not a non-negative safe integer, a hash that is not 32
 *   bytes, or a line with a newline, a control character or nothing in it
 */
export function formatCheckpoint(c: Checkpoint): string {
  if (!Number.isSafeInteger(c.size) || c.size < 0) {
    throw new NoteError(`checkpoint: size must be a non-negative integer, got ${c.size}`);
  }
  if (c.hash.length !== HASH_BYTES) {
    throw new NoteError(`checkpoint: hash must be ${HASH_BYTES} bytes, got ${c.hash.length}`);
  }
  const lines = [c.origin, String(c.size), toBase64(c.hash), ...c.extensions];
  lines.forEach((line, i) => {
    if (line.includes("\n")) throw new NoteError(`checkpoint line ${i + 1}: contains a newline`);
  });
  const text = lines.join("\n") + "\n";
  checkText(text, "checkpoint");
  return text;
}

/**
 * Parses checkpoint note text: origin, size, base64 root hash, extension lines.
 *
 * @throws {NoteError} naming the line that is malformed
 */
export function parseCheckpoint(text: string): Checkpoint {
  checkText(text, "checkpoint");
  const lines = text.slice(0, -1).split("\n");
  const [origin, sizeText, hashText, ...extensions] = lines;
  if (origin === undefined || sizeText === undefined || hashText === undefined) {
    throw new NoteError(`checkpoint: needs origin, size and hash lines, got ${lines.length} line(s)`);
  }
  if (!/^(0|[1-9][0-9]*)$/.test(sizeText)) {
    throw new NoteError(`checkpoint line 2: size must be a decimal integer, got ${JSON.stringify(sizeText)}`);
  }
  const size = Number(sizeText);
  if (!Number.isSafeInteger(size)) {
    throw new NoteError(`checkpoint line 2: size ${sizeText} is larger than ${Number.MAX_SAFE_INTEGER}`);
  }
  const hash = fromBase64(hashText);
  if (hash === null) throw new NoteError(`checkpoint line 3: hash is not base64: ${JSON.stringify(hashText)}`);
  if (hash.length !== HASH_BYTES) {
    throw new NoteError(`checkpoint line 3: hash must be ${HASH_BYTES} bytes, got ${hash.length}`);
  }
  return { origin, size, hash, extensions };
}

/**
 * Loads the signing key (PKCS#8 PEM) at `path`, creating one if the file does
 * not exist: the parent directory with mode 0700, the file with mode 0600
 * (never overwriting a file), synced along with its directory.
 *
 * @throws {NoteError} if the key file is accessible by group or others (not on Windows), is not a file, or does not
 *   hold an Ed25519 private key, or if `name` is not a valid key name
 */
export async function ensureSigningKey(path: string, name: string): Promise<{ signer: NoteSigner; created: boolean }> {
  checkKeyName(name, "signer");
  const windows = Deno.build.os === "windows";
  let info: Deno.FileInfo | null = null;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (info === null) {
    const pem = newSigningKeyPem();
    const dir = dirname(path);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    let file: Deno.FsFile | null = null;
    try {
      file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
    } catch (e) {
      // Someone else created it meanwhile: use theirs.
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    if (file !== null) {
      try {
        await writeAll(file, encoder.encode(pem));
        await file.sync();
      } finally {
        file.close();
      }
      if (!windows) await syncDir(dir);
      return { signer: createSigner(pem, name), created: true };
    }
    info = await Deno.stat(path);
  }
  if (!info.isFile) throw new NoteError(`signing key ${path} is not a regular file`);
  if (!windows && info.mode !== null && (info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    throw new NoteError(
      `signing key ${path} is accessible by group or others (mode ${mode}); run: chmod 600 ${path}`,
    );
  }
  const pem = await Deno.readTextFile(path);
  try {
    return { signer: createSigner(pem, name), created: false };
  } catch (e) {
    if (e instanceof NoteError) throw new NoteError(`signing key ${path}: ${e.message}`);
    throw e;
  }
}
