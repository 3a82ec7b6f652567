import assert from "node:assert/strict";
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import {
  type Checkpoint,
  createSigner,
  ensureSigningKey,
  formatCheckpoint,
  newSigningKeyPem,
  NoteError,
  NoteSignatureError,
  openNote,
  parseCheckpoint,
  parseVerifierKey,
} from "./signed_note.ts";

// The example key and note of golang.org/x/mod/sumdb/note (note_test.go). Ed25519 signatures are deterministic, so
// signing the text must reproduce the published note byte for byte.
const GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_SKEY_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann " +
  "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

/** PKCS#8 PEM of the Go example key (its skey is 0x01 || 32-byte seed). */
function goSigningPem(): string {
  const seed = Uint8Array.from(atob(GO_SKEY_B64), (c) => c.charCodeAt(0)).subarray(1);
  const prefix = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22]);
  const der = new Uint8Array([...prefix, 0x04, 0x20, ...seed]);
  return createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" }).export({
    type: "pkcs8",
    format: "pem",
  }) as string;
}

const b64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));
const unb64 = (text: string) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

/** Replaces the signature bytes (not the key ID) of the first signature line. */
function forgeSignature(signed: string): string {
  const [text, sigLine] = signed.split("\n\n") as [string, string];
  const space = sigLine.lastIndexOf(" ");
  const blob = unb64(sigLine.slice(space + 1, -1));
  blob[10]! ^= 0x01;
  return `${text}\n\n${sigLine.slice(0, space)} ${b64(blob)}\n`;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-note-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("createSigner() and openNote() reproduce the Go reference note byte for byte", () => {
  const signer = createSigner(goSigningPem(), "PeterNeumann");
  assert.equal(signer.verifierKey, GO_VKEY);
  assert.deepStrictEqual(signer.keyId, Uint8Array.of(0xc7, 0x4f, 0x20, 0xa3));
  assert.equal(signer.sign(GO_TEXT), GO_NOTE);
  assert.equal(openNote(GO_NOTE, parseVerifierKey(GO_VKEY)), GO_TEXT);
});

Deno.test("key ID is the first 4 bytes of SHA-256(name || \\n || 0x01 || public key)", () => {
  const pem = newSigningKeyPem();
  const signer = createSigner(pem, "log.example.com/a");
  const x = createPublicKey(pem).export({ format: "jwk" }).x!;
  const publicKey = Buffer.from(x, "base64url");
  assert.equal(publicKey.length, 32);
  const want = createHash("sha256").update("log.example.com/a").update("\n").update(Buffer.of(1)).update(publicKey)
    .digest().subarray(0, 4);
  assert.deepStrictEqual(signer.keyId, new Uint8Array(want));
  assert.equal(
    signer.verifierKey,
    `log.example.com/a+${want.toString("hex")}+${Buffer.concat([Buffer.of(1), publicKey]).toString("base64")}`,
  );
});

Deno.test("sign() then openNote() round-trips the text", () => {
  const signer = createSigner(newSigningKeyPem(), "example.com/log");
  const text = "example.com/log\n3\nÄnderung — ünïcode ok\n";
  const signed = signer.sign(text);
  assert.ok(signed.startsWith(text + "\n\u2014 example.com/log "));
  assert.equal(openNote(signed, parseVerifierKey(signer.verifierKey)), text);
});

Deno.test("openNote() rejects an edited text with NoteSignatureError saying the signature does not verify", () => {
  const signer = createSigner(newSigningKeyPem(), "example.com/log");
  const signed = signer.sign("example.com/log\n3\nhash\n");
  const edited = signed.replace("\n3\n", "\n4\n");
  assert.notEqual(edited, signed);
  assert.throws(
    () => openNote(edited, parseVerifierKey(signer.verifierKey)),
    (e) => e instanceof NoteSignatureError && /example\.com\/log/.test(e.message) && /does not verify/.test(e.message),
  );
  assert.throws(() => openNote(GO_NOTE.replace("cryptography", "cryptographY"), parseVerifierKey(GO_VKEY)), {
    name: "NoteSignatureError",
    message: /c74f20a3.*does not verify/,
  });
});

Deno.test("openNote() rejects a note signed by another key of the same name as having no signature by the key", () => {
  const ours = createSigner(newSigningKeyPem(), "example.com/log");
  const theirs = createSigner(newSigningKeyPem(), "example.com/log");
  const signed = theirs.sign("hello\n");
  const verifier = parseVerifierKey(ours.verifierKey);
  assert.throws(
    () => openNote(signed, verifier),
    (e) =>
      e instanceof NoteSignatureError && e.message.includes(Buffer.from(ours.keyId).toString("hex")) &&
      /absent/.test(e.message),
  );
});

Deno.test("openNote() ignores a valid signature line whose key name is not the verifier's", () => {
  const signer = createSigner(newSigningKeyPem(), "example.com/log");
  const renamed = signer.sign("hello\n").replace("\u2014 example.com/log ", "\u2014 other.example ");
  assert.throws(() => openNote(renamed, parseVerifierKey(signer.verifierKey)), {
    name: "NoteSignatureError",
    message: /absent/,
  });
});

Deno.test("openNote() rejects a forged signature line with the right key ID", () => {
  const signer = createSigner(newSigningKeyPem(), "example.com/log");
  const signed = signer.sign("hello\n");
  const forged = forgeSignature(signed);
  assert.notEqual(forged, signed);
  assert.equal(forged.length, signed.length);
  assert.throws(() => openNote(forged, parseVerifierKey(signer.verifierKey)), {
    name: "NoteSignatureError",
    message: /forged/,
  });
});

Deno.test("openNote() finds our signature among other keys' lines and ignores theirs", () => {
  const ours = createSigner(newSigningKeyPem(), "example.com/log");
  const witness = createSigner(newSigningKeyPem(), "witness.example");
  const sameName = createSigner(newSigningKeyPem(), "example.com/log");
  const text = "example.com/log\n1\n" + b64(new Uint8Array(32)) + "\n";
  const sigLine = (signed: string) => signed.slice(text.length + 1);
  // A garbage signature under an unknown key is skipped, not verified.
  const unknown = "\u2014 unknown.example " + b64(new Uint8Array(68).fill(7)) + "\n";
  const signed = text + "\n" + sigLine(witness.sign(text)) + unknown + sigLine(sameName.sign(text)) +
    sigLine(ours.sign(text));
  assert.equal(openNote(signed, parseVerifierKey(ours.verifierKey)), text);
  assert.equal(openNote(signed, parseVerifierKey(witness.verifierKey)), text);
  // Like the Go implementation, a line for our key that does not verify fails the note even next to a good one.
  const withForgery = signed + sigLine(forgeSignature(ours.sign(text)));
  assert.throws(() => openNote(withForgery, parseVerifierKey(ours.verifierKey)), NoteSignatureError);
});

Deno.test("openNote() throws NoteError for malformed notes", () => {
  const verifier = parseVerifierKey(GO_VKEY);
  const sig = GO_NOTE.slice(GO_TEXT.length + 1);
  const cases: [string, RegExp][] = [
    [GO_TEXT, /no blank line/],
    [GO_TEXT + "\n", /no signature lines/],
    [GO_NOTE.slice(0, -1), /end with a newline/],
    [GO_NOTE + "\n", /no signature lines/],
    ["\n" + sig, /no blank line/],
    ["\n\n" + sig, /signed note text line 1 is empty/],
    ["a\n\nb\n\n" + sig, /line 2 is empty/],
    ["a\tb\n\n" + sig, /line 1 contains control character U\+0009/],
    ["a\r\n\n" + sig, /control character U\+000D/],
    [GO_TEXT + "\n- PeterNeumann AAAAAAA=\n", /line 4: signature line must start with/],
    [GO_TEXT + "\n\u2014 PeterNeumann\n", /line 4: signature line must be/],
    [GO_TEXT + "\n\u2014  AAAAAAAA\n", /key name/],
    [GO_TEXT + "\n\u2014 PeterNeumann not-base64!\n", /base64/],
    [GO_TEXT + "\n\u2014 PeterNeumann AAAAAA==\n", /base64 of a key ID and a signature/],
    [GO_TEXT + "\n" + sig + "\u2014 PeterNeumann x08g\n", /line 5: signature must be base64 of a key ID/],
    [GO_TEXT + "\n" + sig.repeat(101), /101 signature lines, at most 100/],
  ];
  for (const [note, message] of cases) {
    assert.throws(() => openNote(note, verifier), (e) => e instanceof NoteError && message.test(e.message), note);
  }
  // A line with our key ID but a truncated signature is well-formed, and does not verify.
  assert.throws(() => openNote(GO_TEXT + "\n" + sig + "\u2014 PeterNeumann x08go/ZJ\n", verifier), {
    name: "NoteSignatureError",
    message: /line 5 does not verify/,
  });
  // 100 lines are fine.
  assert.equal(openNote(GO_TEXT + "\n" + sig.repeat(100), verifier), GO_TEXT);
});

Deno.test("sign() refuses text that is not a valid note text", () => {
  const signer = createSigner(newSigningKeyPem(), "k");
  for (const text of ["", "no newline", "a\n\nb\n", "\n", "bell\x07\n", "del\x7f\n", "lone \ud800\n"]) {
    assert.throws(() => signer.sign(text), NoteError, JSON.stringify(text));
  }
});

Deno.test("parseVerifierKey() round-trips a signer's key and trims whitespace", () => {
  const signer = createSigner(newSigningKeyPem(), "example.com/log");
  const verifier = parseVerifierKey(`  ${signer.verifierKey}\n`);
  assert.equal(verifier.name, "example.com/log");
  assert.deepStrictEqual(verifier.keyId, signer.keyId);
  const text = "hi\n";
  const blob = unb64(signer.sign(text).split(" ").at(-1)!.trim());
  assert.ok(verifier.verify(new TextEncoder().encode(text), blob.subarray(4)));
  assert.ok(!verifier.verify(new TextEncoder().encode("ho\n"), blob.subarray(4)));
  assert.ok(!verifier.verify(new TextEncoder().encode(text), blob.subarray(5)));
});

Deno.test("parseVerifierKey() rejects malformed keys with NoteError", () => {
  const [name, id, key] = GO_VKEY.split("+") as [string, string, string];
  const raw = unb64(key);
  const cases: [string, RegExp][] = [
    ["", /expected <name>\+<key ID>\+<key>/],
    [`${name}+${id}`, /expected/],
    [`+${id}+${key}`, /key name/],
    [`Peter Neumann+${id}+${key}`, /key name/],
    [`${name}+C74F20A3+${key}`, /8 lowercase hex/],
    [`${name}+c74f20a+${key}`, /8 lowercase hex/],
    [`${name}+c74f20zz+${key}`, /8 lowercase hex/],
    [`${name}+c74f20a4+${key}`, /key ID c74f20a4 does not match .*want c74f20a3/],
    [`Peter+${id}+${key}`, /does not match/],
    [`${name}+${id}+${key.slice(0, -1)}`, /not valid base64/],
    [`${name}+${id}+${b64(raw.subarray(0, 32))}`, /must be 32 bytes, got 31/],
    [`${name}+${id}+${b64(new Uint8Array([...raw, 0]))}`, /must be 32 bytes, got 33/],
    [`${name}+${id}+${b64(new Uint8Array([2, ...raw.subarray(1)]))}`, /unsupported algorithm byte 2/],
  ];
  for (const [vkey, message] of cases) {
    assert.throws(() => parseVerifierKey(vkey), (e) => e instanceof NoteError && message.test(e.message), vkey);
  }
});

Deno.test("createSigner() rejects bad PEMs, non-Ed25519 keys and bad names with NoteError", () => {
  const pem = newSigningKeyPem();
  assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" });
  const publicPem = createPublicKey(pem).export({ type: "spki", format: "pem" }) as string;
  assert.throws(() => createSigner("not a pem", "k"), { name: "NoteError", message: /cannot read/ });
  assert.throws(() => createSigner(publicPem, "k"), NoteError);
  assert.throws(() => createSigner(ec as string, "k"), { name: "NoteError", message: /must be Ed25519, got ec/ });
  for (const name of ["", "a b", "a+b", "tab\there", "nbsp\u00a0", "nel\u0085"]) {
    assert.throws(() => createSigner(pem, name), NoteError, JSON.stringify(name));
  }
});

Deno.test("formatCheckpoint() and parseCheckpoint() round-trip, with and without extensions", () => {
  const hash = Uint8Array.from({ length: 32 }, (_, i) => i * 7);
  const cases: Checkpoint[] = [
    { origin: "example.com/log", size: 0, hash, extensions: [] },
    { origin: "example.com/log", size: 1234567, hash, extensions: ["ext one", "— two"] },
    { origin: "o", size: Number.MAX_SAFE_INTEGER, hash: new Uint8Array(32), extensions: [] },
  ];
  for (const c of cases) {
    const text = formatCheckpoint(c);
    assert.equal(text, [c.origin, String(c.size), b64(c.hash), ...c.extensions].join("\n") + "\n");
    assert.deepStrictEqual(parseCheckpoint(text), c);
  }
  const signer = createSigner(newSigningKeyPem(), "example.com/log");
  const c = cases[1]!;
  assert.deepStrictEqual(
    parseCheckpoint(openNote(signer.sign(formatCheckpoint(c)), parseVerifierKey(signer.verifierKey))),
    c,
  );
});

Deno.test("parseCheckpoint() throws NoteError naming the bad line", () => {
  const h = b64(new Uint8Array(32));
  const cases: [string, RegExp][] = [
    ["", /checkpoint is empty/],
    [`o\n5\n${h}`, /end with a newline/],
    ["o\n", /needs origin, size and hash lines, got 1/],
    ["o\n5\n", /got 2 line/],
    [`\n5\n${h}\n`, /line 1 is empty/],
    [`o\n01\n${h}\n`, /checkpoint line 2: size must be a decimal integer, got "01"/],
    [`o\n-1\n${h}\n`, /line 2: .*"-1"/],
    [`o\n+1\n${h}\n`, /line 2/],
    [`o\n1.0\n${h}\n`, /line 2/],
    [`o\n 1\n${h}\n`, /line 2/],
    [`o\n9007199254740992\n${h}\n`, /line 2: size 9007199254740992 is larger/],
    [`o\n5\n${b64(new Uint8Array(31))}\n`, /line 3: hash must be 32 bytes, got 31/],
    [`o\n5\n${b64(new Uint8Array(33))}\n`, /line 3: hash must be 32 bytes, got 33/],
    [`o\n5\n${h.slice(0, -1)}\n`, /line 3: hash is not base64/],
    [`o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n`, /line 3: hash is not base64/], // non-canonical
    [`o\n5\n${h}\next\n\n`, /line 5 is empty/],
    [`o\n5\n${h}\n\next\n`, /line 4 is empty/],
    [`o\n5\n${h}\nbad\x01ext\n`, /line 4 contains control character U\+0001/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseCheckpoint(text), (e) => e instanceof NoteError && message.test(e.message), text);
  }
});

Deno.test("formatCheckpoint() validates its input", () => {
  const hash = new Uint8Array(32);
  const cases: [Checkpoint, RegExp][] = [
    [{ origin: "", size: 1, hash, extensions: [] }, /line 1 is empty/],
    [{ origin: "a\nb", size: 1, hash, extensions: [] }, /line 1: contains a newline/],
    [{ origin: "o", size: -1, hash, extensions: [] }, /size must be a non-negative integer/],
    [{ origin: "o", size: 1.5, hash, extensions: [] }, /size/],
    [{ origin: "o", size: 2 ** 53, hash, extensions: [] }, /size/],
    [{ origin: "o", size: 1, hash: new Uint8Array(20), extensions: [] }, /hash must be 32 bytes, got 20/],
    [{ origin: "o", size: 1, hash, extensions: ["ok", ""] }, /line 5 is empty/],
    [{ origin: "o", size: 1, hash, extensions: ["x\ny"] }, /line 4: contains a newline/],
  ];
  for (const [c, message] of cases) {
    assert.throws(() => formatCheckpoint(c), (e) => e instanceof NoteError && message.test(e.message), c.origin);
  }
});

Deno.test({
  name: "ensureSigningKey() creates a 0600 key in a 0700 directory and reloads the same key",
  ignore: Deno.build.os === "windows",
  fn: () =>
    withDir(async (dir) => {
      const path = join(dir, "keys", "nested", "log.pem");
      const first = await ensureSigningKey(path, "example.com/log");
      assert.equal(first.created, true);
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(join(dir, "keys"))).mode! & 0o777, 0o700);
      assert.equal((await Deno.stat(join(dir, "keys", "nested"))).mode! & 0o777, 0o700);
      assert.match(await Deno.readTextFile(path), /^-----BEGIN PRIVATE KEY-----\n/);

      const second = await ensureSigningKey(path, "example.com/log");
      assert.equal(second.created, false);
      assert.equal(second.signer.verifierKey, first.signer.verifierKey);
      const signed = first.signer.sign("hello\n");
      assert.equal(openNote(signed, parseVerifierKey(second.signer.verifierKey)), "hello\n");
    }),
});

Deno.test({
  name: "ensureSigningKey() refuses a key file readable by group or others, and a file that is not a key",
  ignore: Deno.build.os === "windows",
  fn: () =>
    withDir(async (dir) => {
      const path = join(dir, "log.pem");
      const pem = newSigningKeyPem();
      await Deno.writeTextFile(path, pem, { mode: 0o600 });
      await Deno.chmod(path, 0o644);
      await assert.rejects(ensureSigningKey(path, "k"), (e) =>
        e instanceof NoteError && /mode 0644/.test(e.message) && e.message.includes(`chmod 600 ${path}`));
      assert.equal(await Deno.readTextFile(path), pem, "the key file is left alone");

      await Deno.chmod(path, 0o600);
      assert.equal((await ensureSigningKey(path, "k")).signer.verifierKey, createSigner(pem, "k").verifierKey);

      const junk = join(dir, "junk.pem");
      await Deno.writeTextFile(junk, "", { mode: 0o600 });
      await assert.rejects(ensureSigningKey(junk, "k"), { name: "NoteError", message: /junk\.pem: .*cannot read/ });
      await assert.rejects(ensureSigningKey(dir, "k"), { name: "NoteError", message: /not a regular file/ });
      await assert.rejects(ensureSigningKey(join(dir, "new.pem"), "bad name"), NoteError);
      await assert.rejects(Deno.stat(join(dir, "new.pem")), Deno.errors.NotFound);
    }),
});
