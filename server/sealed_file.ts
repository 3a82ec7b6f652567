/**
 * Encryption at rest for stored log files: AES-256-GCM, one authenticated
 * record per append, a fresh key per file, and a key ID in each file so that
 * the master key can be rotated (old files name the key that sealed them).
 *
 * Format:
 *
 * - Header, 48 bytes: magic ASCII `TLSLOGE1` (8) || key ID (8) || salt (32
 *   random bytes).
 * - Key ID: the first 8 bytes of HMAC-SHA256(key = master key, message =
 *   `tlslog key id`), shown as 16 lowercase hex characters. It names the key;
 *   it does not reveal it.
 * - Per-file key: HKDF-SHA256(ikm = the 32-byte master key, salt = salt,
 *   info = `tlslog sealed file v1`) → AES-256-GCM key. The salt is random per
 *   file, so every file has its own key, and the record nonces below, which
 *   only count within a file, are never used twice under one key.
 * - Records, appended after the header: u32 big-endian length L of
 *   (ciphertext || 16-byte tag), then those L bytes. Record i (0-based) is
 *   sealed with nonce = 4 zero bytes || u64 big-endian i and additional data
 *   = the 48 header bytes || u64 big-endian i, so a record cannot be moved to
 *   another position or another file, nor the header swapped. A record holds
 *   at most 64 MiB of plaintext.
 *
 * What is detected: any change to the magic, key ID, salt, a length, a
 * ciphertext or a tag of a stored record; records reordered or copied between
 * files; a record cut short (a torn write). Record numbers in messages are
 * 0-based, byte offsets are where the record's length prefix starts.
 *
 * What is NOT detected: records missing at the end. A file cut back exactly to
 * a record boundary (the header end included) is a valid, shorter file and
 * {@link unseal} returns the records it still holds; this is what lets the
 * store cut a file back after a crash. The caller must know by other means
 * (the commit log) how far a file should reach. In the same way a file of
 * the header alone authenticates nothing: its salt can be changed unnoticed
 * (harmless, as there is no data under it).
 *
 * @module
 */
import { concatBytes } from "../shared/bytes.ts";
import { toHex } from "./entry_chain.ts";

/** Raised when a key file is unreadable or malformed, or a file is sealed under a key that was not given. */
export class EncryptionKeyError extends Error {
  override name = "EncryptionKeyError";
}

/** Raised when a sealed file is damaged: bad header, a torn record, or a record that fails authentication. */
export class SealedFileError extends Error {
  override name = "SealedFileError";
}

/** A 32-byte master key and its ID. */
export interface EncryptionKey {
  /** 16 lowercase hex characters naming the key (see the module doc); safe to show. */
  readonly id: string;
  /** The 32 key bytes. Never log or show them. */
  readonly raw: Uint8Array;
}

/** Bytes of a sealed file's header. */
export const SEALED_HEADER_BYTES = 48;

const MAGIC = new TextEncoder().encode("TLSLOGE1");
const KEY_ID_BYTES = 8;
const SALT_BYTES = 32;
const KEY_BYTES = 32;
const TAG_BYTES = 16;
const LENGTH_BYTES = 4;
const MAX_PLAINTEXT_BYTES = 64 * 1024 * 1024;
const MAX_KEY_FILE_BYTES = 4096;
const HKDF_INFO = new TextEncoder().encode("tlslog sealed file v1");
const KEY_ID_MESSAGE = new TextEncoder().encode("tlslog key id");
const MAKE_KEY_HINT = "make one with: openssl rand -hex 32 > KEYFILE && chmod 600 KEYFILE";

function fromHex(hex: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * Wraps 32 key bytes (copied) as a key with its ID.
 *
 * @throws {EncryptionKeyError} when `raw` is not exactly 32 bytes
 */
export async function keyFromBytes(raw: Uint8Array): Promise<EncryptionKey> {
  if (raw.length !== KEY_BYTES) {
    throw new EncryptionKeyError(`an encryption key must be ${KEY_BYTES} bytes, got ${raw.length}`);
  }
  const copy = new Uint8Array(raw);
  const hmacKey = await crypto.subtle.importKey("raw", copy, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, KEY_ID_MESSAGE));
  return { id: toHex(mac.subarray(0, KEY_ID_BYTES)), raw: copy };
}

/** What a key file holds, in words, without showing any of it. */
function describeKeyText(text: string): string {
  if (text.length === 0) return "an empty file";
  if (/^[0-9a-fA-F]+$/.test(text)) {
    return text.length % 2 === 0
      ? `${text.length} hex characters (${text.length / 2} bytes)`
      : `${text.length} hex characters (an odd number)`;
  }
  if (text.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(text)) {
    return `base64 of ${fromBase64(text).length} bytes`;
  }
  return `${text.length} characters that are neither hex nor base64`;
}

/**
 * Reads a master key file: 64 hex characters or the standard base64 of 32
 * bytes, surrounding whitespace ignored (`openssl rand -hex 32` makes one).
 * Outside Windows the file must not be readable or writable by group or
 * others.
 *
 * @throws {EncryptionKeyError} when the file is missing, unreadable, open to others, or holds anything else
 */
export async function readEncryptionKey(path: string): Promise<EncryptionKey> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new EncryptionKeyError(
        `encryption key file ${path} does not exist; ${MAKE_KEY_HINT.replaceAll("KEYFILE", path)}`,
      );
    }
    throw new EncryptionKeyError(`cannot read encryption key file ${path}: ${(e as Error).message}`);
  }
  let bytes: Uint8Array;
  try {
    const info = await file.stat();
    if (!info.isFile) throw new EncryptionKeyError(`encryption key file ${path} is not a regular file`);
    if (Deno.build.os !== "windows" && info.mode !== null && (info.mode & 0o077) !== 0) {
      const mode = (info.mode & 0o777).toString(8).padStart(3, "0");
      throw new EncryptionKeyError(
        `encryption key file ${path} is readable by others (mode ${mode}); restrict it with: chmod 600 ${path}`,
      );
    }
    if (info.size > MAX_KEY_FILE_BYTES) {
      throw new EncryptionKeyError(
        `encryption key file ${path} must hold 64 hex characters or the base64 of 32 bytes; ` +
          `found ${info.size} bytes; ${MAKE_KEY_HINT.replaceAll("KEYFILE", path)}`,
      );
    }
    const buf = new Uint8Array(MAX_KEY_FILE_BYTES + 1);
    let n = 0;
    while (n < buf.length) {
      const got = await file.read(buf.subarray(n));
      if (got === null) break;
      n += got;
    }
    bytes = buf.subarray(0, n);
  } catch (e) {
    if (e instanceof EncryptionKeyError) throw e;
    throw new EncryptionKeyError(`cannot read encryption key file ${path}: ${(e as Error).message}`);
  } finally {
    file.close();
  }
  const text = new TextDecoder().decode(bytes).trim();
  let raw: Uint8Array | null = null;
  if (/^[0-9a-fA-F]{64}$/.test(text)) raw = fromHex(text);
  else if (/^[A-Za-z0-9+/]{43}=$/.test(text)) raw = fromBase64(text);
  if (raw === null || raw.length !== KEY_BYTES) {
    throw new EncryptionKeyError(
      `encryption key file ${path} must hold 64 hex characters or the base64 of 32 bytes; ` +
        `found ${describeKeyText(text)}; ${MAKE_KEY_HINT.replaceAll("KEYFILE", path)}`,
    );
  }
  return await keyFromBytes(raw);
}

/** Whether `bytes` starts with the sealed-file magic. */
export function isSealed(bytes: Uint8Array): boolean {
  if (bytes.length < MAGIC.length) return false;
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) return false;
  return true;
}

/** The key ID (16 hex characters) in a sealed file's header, or null when `bytes` does not start with one. */
export function sealedKeyId(bytes: Uint8Array): string | null {
  if (!isSealed(bytes) || bytes.length < MAGIC.length + KEY_ID_BYTES) return null;
  return toHex(bytes.subarray(MAGIC.length, MAGIC.length + KEY_ID_BYTES));
}

async function fileKey(
  master: EncryptionKey,
  salt: Uint8Array<ArrayBuffer>,
  usage: "encrypt" | "decrypt",
): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey("raw", new Uint8Array(master.raw), "HKDF", false, ["deriveKey"]);
  return await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt, info: HKDF_INFO },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    [usage],
  );
}

function nonce(index: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(4, BigInt(index));
  return out;
}

function additionalData(header: Uint8Array, index: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(SEALED_HEADER_BYTES + 8);
  out.set(header.subarray(0, SEALED_HEADER_BYTES));
  new DataView(out.buffer).setBigUint64(SEALED_HEADER_BYTES, BigInt(index));
  return out;
}

/**
 * Seals the records of one new file. Write {@link SealedWriter.header} first,
 * then each {@link SealedWriter.seal} result in the order of the calls.
 */
export class SealedWriter {
  /** The 48 header bytes, to write first. */
  readonly header: Uint8Array;
  #key: CryptoKey;
  #records = 0;

  private constructor(header: Uint8Array, key: CryptoKey) {
    this.header = header;
    this.#key = key;
  }

  /** A writer for a new file sealed under `key`, with a fresh random salt. */
  static async create(key: EncryptionKey): Promise<SealedWriter> {
    const header = new Uint8Array(SEALED_HEADER_BYTES);
    header.set(MAGIC);
    header.set(fromHex(key.id), MAGIC.length);
    const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
    header.set(salt, MAGIC.length + KEY_ID_BYTES);
    return new SealedWriter(header, await fileKey(key, salt, "encrypt"));
  }

  /** Records sealed so far (the index of the next one). */
  get records(): number {
    return this.#records;
  }

  /**
   * Seals the next record and returns its bytes, length prefix included. The
   * record index is taken when the call is made, so concurrent calls never
   * share a nonce, but their results must be written in call order.
   *
   * @throws {RangeError} when `plain` exceeds 64 MiB
   */
  async seal(plain: Uint8Array): Promise<Uint8Array> {
    if (plain.length > MAX_PLAINTEXT_BYTES) {
      throw new RangeError(`a sealed record holds at most ${MAX_PLAINTEXT_BYTES} bytes, got ${plain.length}`);
    }
    const index = this.#records++;
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce(index), additionalData: additionalData(this.header, index), tagLength: 128 },
        this.#key,
        plain as Uint8Array<ArrayBuffer>,
      ),
    );
    const out = new Uint8Array(LENGTH_BYTES + sealed.length);
    new DataView(out.buffer).setUint32(0, sealed.length);
    out.set(sealed, LENGTH_BYTES);
    return out;
  }
}

/** Checks magic and header length. */
function checkHeader(bytes: Uint8Array, name: string): void {
  const n = Math.min(bytes.length, MAGIC.length);
  for (let i = 0; i < n; i++) {
    if (bytes[i] !== MAGIC[i]) throw new SealedFileError(`${name} is not a sealed tlslog file (bad magic)`);
  }
  if (bytes.length < SEALED_HEADER_BYTES) {
    throw new SealedFileError(`${name}: the header is cut short (${bytes.length} of ${SEALED_HEADER_BYTES} bytes)`);
  }
}

/**
 * Decrypts a whole sealed file to the concatenation of its records'
 * plaintexts, with the key of `keys` that the header names. A file cut back to
 * a record boundary is returned as it is (see the module doc).
 *
 * @param name how to call the file in messages
 * @throws {EncryptionKeyError} when no key in `keys` has the header's key ID
 * @throws {SealedFileError} on a bad header, a torn record or a record that fails authentication
 */
export async function unseal(bytes: Uint8Array, keys: readonly EncryptionKey[], name: string): Promise<Uint8Array> {
  checkHeader(bytes, name);
  const id = sealedKeyId(bytes)!;
  const master = keys.find((k) => k.id === id);
  if (master === undefined) {
    if (keys.length === 0) throw new EncryptionKeyError(`${name} is encrypted (key ${id}); pass --encrypt-key`);
    throw new EncryptionKeyError(
      `${name} is encrypted with key ${id}; the key given is ${keys.map((k) => k.id).join(", ")}`,
    );
  }
  const header = bytes.subarray(0, SEALED_HEADER_BYTES);
  const key = await fileKey(master, bytes.slice(MAGIC.length + KEY_ID_BYTES, SEALED_HEADER_BYTES), "decrypt");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const parts: Uint8Array[] = [];
  let pos = SEALED_HEADER_BYTES;
  for (let index = 0; pos < bytes.length; index++) {
    const at = `${name}: record ${index} at byte ${pos}`;
    if (bytes.length - pos < LENGTH_BYTES) throw new SealedFileError(`${at} is cut short`);
    const len = view.getUint32(pos);
    if (len < TAG_BYTES || len > MAX_PLAINTEXT_BYTES + TAG_BYTES) {
      throw new SealedFileError(`${at} has an impossible length ${len}: the file was altered`);
    }
    const end = pos + LENGTH_BYTES + len;
    if (end > bytes.length) throw new SealedFileError(`${at} is cut short`);
    let plain: Uint8Array;
    try {
      plain = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: nonce(index), additionalData: additionalData(header, index), tagLength: 128 },
          key,
          bytes.subarray(pos + LENGTH_BYTES, end) as Uint8Array<ArrayBuffer>,
        ),
      );
    } catch {
      throw new SealedFileError(`${at} failed authentication: the file was altered`);
    }
    parts.push(plain);
    pos = end;
  }
  return concatBytes(parts);
}

/**
 * Byte offsets just after each complete record, in order, without decrypting
 * (for checking that a cut lands on a record boundary; the header end,
 * {@link SEALED_HEADER_BYTES}, is a boundary too but is not listed). Stops at a
 * torn tail or a length no record can have; empty when the header is missing
 * or cut short.
 */
export function sealedRecordEnds(bytes: Uint8Array): number[] {
  const ends: number[] = [];
  if (!isSealed(bytes) || bytes.length < SEALED_HEADER_BYTES) return ends;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = SEALED_HEADER_BYTES;
  while (bytes.length - pos >= LENGTH_BYTES) {
    const len = view.getUint32(pos);
    if (len < TAG_BYTES || len > MAX_PLAINTEXT_BYTES + TAG_BYTES) break;
    const end = pos + LENGTH_BYTES + len;
    if (end > bytes.length) break;
    ends.push(end);
    pos = end;
  }
  return ends;
}
