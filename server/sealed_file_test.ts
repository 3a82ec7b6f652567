import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createDecipheriv, createHmac, hkdfSync } from "node:crypto";
import { join } from "node:path";
import {
  EncryptionKeyError,
  isSealed,
  keyFromBytes,
  readEncryptionKey,
  SEALED_HEADER_BYTES,
  SealedFileError,
  sealedKeyId,
  sealedRecordEnds,
  SealedWriter,
  unseal,
} from "./sealed_file.ts";
import { concatBytes } from "../shared/bytes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const onWindows = Deno.build.os === "windows";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const base64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));
const rawKey = (seed: number) => Uint8Array.from({ length: 32 }, (_, i) => (seed * 31 + i * 7) & 0xff);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-sealed-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A whole sealed file of `plains`, and its records. */
async function sealAll(
  key: Awaited<ReturnType<typeof keyFromBytes>>,
  plains: Uint8Array[],
): Promise<{ file: Uint8Array; records: Uint8Array[]; header: Uint8Array }> {
  const w = await SealedWriter.create(key);
  const records: Uint8Array[] = [];
  for (const p of plains) records.push(await w.seal(p));
  return { file: concatBytes([w.header, ...records]), records, header: w.header };
}

/** Asserts that the message shows none of the key's material. */
function assertNoKeyMaterial(message: string, raw: Uint8Array): void {
  for (const s of [hex(raw), hex(raw).toUpperCase(), base64(raw), hex(raw).slice(0, 16), base64(raw).slice(0, 12)]) {
    assert.ok(!message.includes(s), `message shows key material: ${message}`);
  }
}

Deno.test("keyFromBytes() takes exactly 32 bytes and gives a 16-hex-character ID", async () => {
  const key = await keyFromBytes(rawKey(1));
  assert.match(key.id, /^[0-9a-f]{16}$/);
  assert.deepStrictEqual(key.raw, rawKey(1));
  assert.equal((await keyFromBytes(rawKey(1))).id, key.id);
  assert.notEqual((await keyFromBytes(rawKey(2))).id, key.id);
  // The ID is the HMAC of the fixed message under the key, not derived from anything else.
  const hmac = await crypto.subtle.importKey("raw", rawKey(1), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", hmac, enc.encode("tlslog key id")));
  assert.equal(key.id, hex(mac.subarray(0, 8)));
  for (const n of [0, 16, 31, 33, 64]) {
    await assert.rejects(keyFromBytes(new Uint8Array(n)), (e: unknown) => {
      return e instanceof EncryptionKeyError && e.message.includes(`got ${n}`);
    });
  }
});

Deno.test("sealed records round-trip through a real file", async () => {
  await withDir(async (dir) => {
    const key = await keyFromBytes(rawKey(1));
    const big = Uint8Array.from({ length: 1024 * 1024 }, (_, i) => (i * 2654435761) >>> 24);
    const plains = [enc.encode('{"a":1}\n'), new Uint8Array(0), big, enc.encode('{"b":2}\n{"c":3}\n')];
    const w = await SealedWriter.create(key);
    assert.equal(w.header.length, SEALED_HEADER_BYTES);
    const path = join(dir, "tlslog-00000001.jsonl");
    const f = await Deno.open(path, { write: true, create: true, append: true });
    try {
      await f.write(w.header);
      for (const p of plains) {
        const rec = await w.seal(p);
        assert.equal(rec.length, 4 + p.length + 16);
        assert.equal(new DataView(rec.buffer, rec.byteOffset).getUint32(0), p.length + 16);
        let n = 0;
        while (n < rec.length) n += await f.write(rec.subarray(n));
      }
    } finally {
      f.close();
    }
    assert.equal(w.records, plains.length);
    const bytes = await Deno.readFile(path);
    assert.ok(isSealed(bytes));
    assert.equal(sealedKeyId(bytes), key.id);
    const out = await unseal(bytes, [key], path);
    assert.deepStrictEqual(out, concatBytes(plains));
    // The plaintext does not show through.
    const needle = enc.encode('{"b":2}');
    assert.ok(!dec.decode(bytes).includes('{"a":1}') && !dec.decode(bytes).includes(dec.decode(needle)));
    let pos = SEALED_HEADER_BYTES;
    const ends = plains.map((p) => (pos += 4 + p.length + 16));
    assert.deepStrictEqual(sealedRecordEnds(bytes), ends);
    assert.equal(ends.at(-1), bytes.length);
  });
});

Deno.test("a file of the header alone unseals to nothing", async () => {
  const key = await keyFromBytes(rawKey(1));
  const w = await SealedWriter.create(key);
  assert.deepStrictEqual(await unseal(w.header, [key], "f"), new Uint8Array(0));
  assert.deepStrictEqual(sealedRecordEnds(w.header), []);
});

Deno.test("isSealed() and sealedKeyId() read the header only", async () => {
  const key = await keyFromBytes(rawKey(1));
  const w = await SealedWriter.create(key);
  assert.ok(isSealed(w.header));
  assert.ok(isSealed(enc.encode("TLSLOGE1")));
  assert.ok(!isSealed(enc.encode("TLSLOGE")));
  assert.ok(!isSealed(enc.encode('{"a":1}\n')));
  assert.ok(!isSealed(new Uint8Array(0)));
  assert.equal(sealedKeyId(w.header), key.id);
  assert.equal(sealedKeyId(w.header.subarray(0, 16)), key.id);
  assert.equal(sealedKeyId(w.header.subarray(0, 15)), null);
  assert.equal(sealedKeyId(enc.encode('{"a":1}\n{"b":2}\n{"c":3}\n')), null);
  assert.equal(new TextDecoder().decode(w.header.subarray(0, 8)), "TLSLOGE1");
});

Deno.test("two writers with one key differ in salt and ciphertext for the same plaintext", async () => {
  const key = await keyFromBytes(rawKey(1));
  const plain = enc.encode('{"same":"line"}\n');
  const a = await sealAll(key, [plain]);
  const b = await sealAll(key, [plain]);
  assert.deepStrictEqual(a.header.subarray(0, 16), b.header.subarray(0, 16));
  assert.notDeepStrictEqual(a.header.subarray(16), b.header.subarray(16));
  assert.equal(a.records[0]!.length, b.records[0]!.length);
  assert.notDeepStrictEqual(a.records[0]!.subarray(4), b.records[0]!.subarray(4));
  assert.deepStrictEqual(await unseal(a.file, [key], "a"), plain);
  assert.deepStrictEqual(await unseal(b.file, [key], "b"), plain);
});

Deno.test("the same plaintext at different records of one file gives different ciphertext", async () => {
  const key = await keyFromBytes(rawKey(1));
  const plain = enc.encode('{"same":"line"}\n');
  const { records } = await sealAll(key, [plain, plain, plain]);
  // Ciphertext without the tag: equal would mean a reused nonce (same keystream).
  const bodies = new Set(records.map((r) => hex(r.subarray(4, r.length - 16))));
  assert.equal(bodies.size, 3);
});

Deno.test("the format matches the module doc (checked with node:crypto)", async () => {
  const raw = rawKey(7);
  const key = await keyFromBytes(raw);
  assert.equal(key.id, createHmac("sha256", raw).update("tlslog key id").digest("hex").slice(0, 16));
  const plains = [enc.encode("zero\n"), enc.encode("one\n"), new Uint8Array(0), enc.encode("three\n")];
  const { header, file } = await sealAll(key, plains);
  assert.equal(dec.decode(header.subarray(0, 8)), "TLSLOGE1");
  assert.equal(hex(header.subarray(8, 16)), key.id);
  const fileKey = Buffer.from(hkdfSync("sha256", raw, header.subarray(16, 48), "tlslog sealed file v1", 32));
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let pos = SEALED_HEADER_BYTES;
  for (let i = 0; i < plains.length; i++) {
    const len = view.getUint32(pos);
    const body = file.subarray(pos + 4, pos + 4 + len);
    const iv = Buffer.alloc(12);
    iv.writeBigUInt64BE(BigInt(i), 4);
    const ad = Buffer.alloc(56);
    ad.set(header);
    ad.writeBigUInt64BE(BigInt(i), 48);
    const d = createDecipheriv("aes-256-gcm", fileKey, iv);
    d.setAAD(ad);
    d.setAuthTag(body.subarray(len - 16));
    assert.deepStrictEqual(
      new Uint8Array(Buffer.concat([d.update(body.subarray(0, len - 16)), d.final()])),
      plains[i],
      `record ${i}`,
    );
    pos += 4 + len;
  }
  assert.equal(pos, file.length);
});

Deno.test("changing any single byte of a sealed file is detected", async () => {
  const key = await keyFromBytes(rawKey(1));
  const { file } = await sealAll(key, [enc.encode('{"a":1}\n'), new Uint8Array(0), enc.encode('{"b":22}\n')]);
  const seen = { SealedFileError: 0, EncryptionKeyError: 0 };
  for (let i = 0; i < file.length; i++) {
    for (const mask of [0x01, 0x80, 0xff]) {
      const bad = file.slice();
      bad[i]! ^= mask;
      let out: Uint8Array | undefined;
      try {
        out = await unseal(bad, [key], "f");
      } catch (e) {
        if (e instanceof SealedFileError) seen.SealedFileError++;
        else if (e instanceof EncryptionKeyError) seen.EncryptionKeyError++;
        else throw e;
      }
      assert.equal(out, undefined, `byte ${i} ^ ${mask} went unnoticed`);
    }
  }
  // Key ID bytes give a key error, everything else damage.
  assert.equal(seen.EncryptionKeyError, 8 * 3);
  assert.equal(seen.SealedFileError, (file.length - 8) * 3);
});

Deno.test("damage messages name the file, the record and its byte offset", async () => {
  const key = await keyFromBytes(rawKey(1));
  const { file } = await sealAll(key, [enc.encode("x\n"), enc.encode("yy\n"), enc.encode("zzz\n")]);
  const ends = sealedRecordEnds(file);
  const bad = file.slice();
  bad[ends[1]! + 4 + 1]! ^= 1; // record 2's ciphertext
  await assert.rejects(unseal(bad, [key], "data/x.jsonl"), {
    name: "SealedFileError",
    message: `data/x.jsonl: record 2 at byte ${ends[1]} failed authentication: the file was altered`,
  });
  const notSealed = enc.encode('{"a":1}\n'.repeat(10));
  await assert.rejects(unseal(notSealed, [key], "p"), { name: "SealedFileError", message: /p is not a sealed/ });
  await assert.rejects(unseal(file.subarray(0, 20), [key], "p"), {
    name: "SealedFileError",
    message: "p: the header is cut short (20 of 48 bytes)",
  });
  const hugeLength = file.slice();
  new DataView(hugeLength.buffer).setUint32(ends[0]!, 0xffffffff);
  await assert.rejects(unseal(hugeLength, [key], "p"), { name: "SealedFileError", message: /record 1 at byte/ });
});

Deno.test("records swapped or copied from another file fail authentication", async () => {
  const key = await keyFromBytes(rawKey(1));
  // Same lengths, so only the cryptography can tell.
  const { header, records } = await sealAll(key, [enc.encode("aaaa\n"), enc.encode("bbbb\n"), enc.encode("cccc\n")]);
  const swapped = concatBytes([header, records[1]!, records[0]!, records[2]!]);
  await assert.rejects(unseal(swapped, [key], "f"), {
    name: "SealedFileError",
    message: `f: record 0 at byte ${SEALED_HEADER_BYTES} failed authentication: the file was altered`,
  });
  const dropped = concatBytes([header, records[0]!, records[2]!]);
  await assert.rejects(unseal(dropped, [key], "f"), { name: "SealedFileError", message: /record 1 .* authentication/ });
  const other = await sealAll(key, [enc.encode("aaaa\n")]);
  const foreign = concatBytes([header, other.records[0]!]);
  await assert.rejects(unseal(foreign, [key], "f"), { name: "SealedFileError", message: /record 0 .* authentication/ });
  const otherHeader = concatBytes([other.header, ...records]);
  await assert.rejects(unseal(otherHeader, [key], "f"), { name: "SealedFileError" });
});

Deno.test("a cut inside a record is an error, a cut at a record boundary returns the records before it", async () => {
  const key = await keyFromBytes(rawKey(1));
  const plains = [enc.encode('{"a":1}\n'), new Uint8Array(0), enc.encode('{"b":2}\n'), enc.encode('{"c":3}\n')];
  const { file } = await sealAll(key, plains);
  const ends = sealedRecordEnds(file);
  assert.equal(ends.length, plains.length);
  const boundaries = [SEALED_HEADER_BYTES, ...ends];
  for (let cut = 0; cut <= file.length; cut++) {
    const part = file.subarray(0, cut);
    const b = boundaries.indexOf(cut);
    if (cut < SEALED_HEADER_BYTES) {
      await assert.rejects(unseal(part, [key], "f"), { name: "SealedFileError", message: /cut short|not a sealed/ });
    } else if (b >= 0) {
      // Whole records only: returned as a valid, shorter file (missing tails are the caller's to notice).
      assert.deepStrictEqual(await unseal(part, [key], "f"), concatBytes(plains.slice(0, b)));
      assert.deepStrictEqual(sealedRecordEnds(part), ends.slice(0, b));
    } else {
      const torn = boundaries.filter((x) => x < cut).length - 1;
      await assert.rejects(unseal(part, [key], "f"), {
        name: "SealedFileError",
        message: `f: record ${torn} at byte ${boundaries[torn]} is cut short`,
      });
      assert.deepStrictEqual(sealedRecordEnds(part), ends.slice(0, torn));
    }
  }
});

Deno.test("unseal() picks the key the header names, and says which one is missing", async () => {
  const k1 = await keyFromBytes(rawKey(1));
  const k2 = await keyFromBytes(rawKey(2));
  const k3 = await keyFromBytes(rawKey(3));
  const plain = enc.encode('{"rotated":true}\n');
  const { file } = await sealAll(k2, [plain]);
  assert.deepStrictEqual(await unseal(file, [k1, k2], "f"), plain);
  assert.deepStrictEqual(await unseal(file, [k2, k1], "f"), plain);
  const wrong = await assert.rejects(unseal(file, [k1], "data/f.jsonl"), (e: unknown) => {
    assert.ok(e instanceof EncryptionKeyError);
    assert.equal(e.message, `data/f.jsonl is encrypted with key ${k2.id}; the key given is ${k1.id}`);
    for (const k of [k1, k2]) assertNoKeyMaterial(e.message, k.raw);
    return true;
  });
  assert.equal(wrong, undefined);
  await assert.rejects(unseal(file, [k1, k3], "f"), (e: unknown) => {
    return e instanceof EncryptionKeyError && e.message.includes(k2.id) && e.message.includes(k1.id) &&
      e.message.includes(k3.id);
  });
  await assert.rejects(unseal(file, [], "data/f.jsonl"), {
    name: "EncryptionKeyError",
    message: `data/f.jsonl is encrypted (key ${k2.id}); pass --encrypt-key`,
  });
  // A key with the right ID but other bytes cannot exist in practice; forged, it fails authentication.
  const forged = { id: k2.id, raw: k1.raw };
  await assert.rejects(unseal(file, [forged], "f"), { name: "SealedFileError", message: /authentication/ });
});

Deno.test("seal() refuses a record over 64 MiB", async () => {
  const w = await SealedWriter.create(await keyFromBytes(rawKey(1)));
  await assert.rejects(w.seal(new Uint8Array(64 * 1024 * 1024 + 1)), RangeError);
  assert.equal(w.records, 0);
  const max = await w.seal(new Uint8Array(64 * 1024 * 1024));
  assert.equal(max.length, 4 + 64 * 1024 * 1024 + 16);
  assert.equal(w.records, 1);
});

Deno.test("readEncryptionKey() reads hex and base64 key files", { ignore: onWindows }, async () => {
  await withDir(async (dir) => {
    const raw = rawKey(5);
    const want = await keyFromBytes(raw);
    const cases = {
      "hex.key": hex(raw) + "\n",
      "HEX.key": "  " + hex(raw).toUpperCase() + "\r\n",
      "b64.key": base64(raw) + "\n",
    };
    for (const [name, text] of Object.entries(cases)) {
      const path = join(dir, name);
      await Deno.writeTextFile(path, text, { mode: 0o600 });
      await Deno.chmod(path, 0o600);
      const key = await readEncryptionKey(path);
      assert.equal(key.id, want.id, name);
      assert.deepStrictEqual(key.raw, raw, name);
    }
    await Deno.chmod(join(dir, "hex.key"), 0o400);
    assert.equal((await readEncryptionKey(join(dir, "hex.key"))).id, want.id);
  });
});

Deno.test(
  "readEncryptionKey() refuses bad key files without showing their content",
  { ignore: onWindows },
  async () => {
    await withDir(async (dir) => {
      const raw = rawKey(6);
      const write = async (name: string, text: string, mode = 0o600) => {
        const path = join(dir, name);
        await Deno.writeTextFile(path, text, { mode });
        await Deno.chmod(path, mode);
        return path;
      };
      const refused = async (path: string, pattern: RegExp, secret: string) => {
        await assert.rejects(readEncryptionKey(path), (e: unknown) => {
          assert.ok(e instanceof EncryptionKeyError, String(e));
          assert.match(e.message, pattern);
          assert.ok(e.message.includes(path), e.message);
          if (secret.length > 0) assert.ok(!e.message.includes(secret), e.message);
          assertNoKeyMaterial(e.message, raw);
          return true;
        });
      };
      const short = hex(raw.subarray(0, 31));
      await refused(
        await write("short.key", short + "\n"),
        /found 62 hex characters \(31 bytes\).*openssl rand/,
        short,
      );
      const shortB64 = base64(raw.subarray(0, 31));
      await refused(await write("short64.key", shortB64), /found base64 of 31 bytes/, shortB64);
      const notHex = "-" + hex(raw).slice(1);
      await refused(await write("nothex.key", notHex), /found 64 characters that are neither hex nor base64/, notHex);
      await refused(await write("empty.key", "\n"), /found an empty file/, "");
      await refused(await write("open.key", hex(raw) + "\n", 0o644), /readable by others.*chmod 600/, hex(raw));
      await refused(await write("group.key", hex(raw) + "\n", 0o640), /readable by others/, hex(raw));
      await refused(await write("big.key", hex(raw).repeat(100)), /found 6400 bytes/, hex(raw));
      await refused(join(dir, "missing.key"), /does not exist/, "");
      await refused(dir, /not a regular file|cannot read/, "");
    });
  },
);
