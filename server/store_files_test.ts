import assert from "node:assert/strict";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { EncryptionKeyError, keyFromBytes, SealedWriter } from "./sealed_file.ts";
import type { EncryptionKey } from "./sealed_file.ts";
import {
  compressedName,
  dataFileName,
  isCompressedName,
  isEncryptedName,
  listDataFiles,
  listStoreFiles,
  readStoreFile,
  readStoreText,
  StoreFileError,
  storeFileIndex,
} from "./store_files.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const TEXT = '{"id":0}\n{"id":1,"msg":"héllo ✓"}\n{"id":2}\n';
const rawKey = (seed: number) => Uint8Array.from({ length: 32 }, (_, i) => (seed * 29 + i * 11) & 0xff);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-store-files-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A sealed file of `parts`, one record each, as RotatingStore writes it. */
async function sealed(key: EncryptionKey, parts: Uint8Array[]): Promise<Uint8Array> {
  const w = await SealedWriter.create(key);
  const chunks = [w.header];
  for (const p of parts) chunks.push(await w.seal(p));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

async function touch(dir: string, names: string[]): Promise<void> {
  for (const name of names) await Deno.writeTextFile(join(dir, name), name);
}

Deno.test("dataFileName() gives each form of a data file's name", () => {
  assert.equal(dataFileName(7), "tlslog-00000007.jsonl");
  assert.equal(dataFileName(7, {}), "tlslog-00000007.jsonl");
  assert.equal(dataFileName(7, { gz: true }), "tlslog-00000007.jsonl.gz");
  assert.equal(dataFileName(7, { enc: true }), "tlslog-00000007.jsonl.enc");
  assert.equal(dataFileName(7, { gz: true, enc: true }), "tlslog-00000007.jsonl.gz.enc");
  assert.equal(dataFileName(7, { gz: false, enc: false }), "tlslog-00000007.jsonl");
  assert.equal(dataFileName(123456789), "tlslog-123456789.jsonl");
  for (const form of [{}, { gz: true }, { enc: true }, { gz: true, enc: true }]) {
    assert.equal(storeFileIndex(dataFileName(42, form)), 42);
  }
});

Deno.test("storeFileIndex(), isCompressedName(), compressedName() and isEncryptedName() read store names", () => {
  assert.equal(storeFileIndex("tlslog-00000003.chain"), 3);
  assert.equal(storeFileIndex("tlslog-00000003.chain.gz"), 3);
  for (const name of ["tlslog-3.jsonl", "tlslog-00000003.jsonl.tmp", "tlslog-commits.log", "x-00000003.jsonl"]) {
    assert.equal(storeFileIndex(name), null, name);
  }
  assert.deepStrictEqual(
    ["a.jsonl", "a.jsonl.gz", "a.jsonl.enc", "a.jsonl.gz.enc", "a.chain.gz"].map(isCompressedName),
    [false, true, false, true, true],
  );
  assert.equal(compressedName("a.jsonl"), "a.jsonl.gz");
  assert.equal(compressedName("a.jsonl.enc"), "a.jsonl.gz.enc");
  assert.equal(compressedName("a.chain"), "a.chain.gz");
  assert.deepStrictEqual(["a.jsonl", "a.jsonl.enc", "a.jsonl.gz.enc"].map(isEncryptedName), [false, true, true]);
});

Deno.test("listStoreFiles() groups data and chain files by number, in numeric order", async () => {
  await withDir(async (dir) => {
    // 9 digits sort before 8 as strings ("tlslog-1…" < "tlslog-2…"), but come after them by number.
    await touch(dir, [
      "tlslog-100000000.jsonl",
      "tlslog-20000000.jsonl",
      "tlslog-20000000.chain",
      "tlslog-00000010.jsonl",
      "tlslog-00000010.chain",
      "tlslog-00000002.jsonl.enc",
      "tlslog-00000002.chain",
      "tlslog-00000009.chain",
      "tlslog-00000001.jsonl",
    ]);
    const sets = await listStoreFiles(dir);
    assert.deepStrictEqual(sets, [
      { index: 1, data: "tlslog-00000001.jsonl", chain: null, leftovers: [] },
      { index: 2, data: "tlslog-00000002.jsonl.enc", chain: "tlslog-00000002.chain", leftovers: [] },
      { index: 9, data: null, chain: "tlslog-00000009.chain", leftovers: [] },
      { index: 10, data: "tlslog-00000010.jsonl", chain: "tlslog-00000010.chain", leftovers: [] },
      { index: 20000000, data: "tlslog-20000000.jsonl", chain: "tlslog-20000000.chain", leftovers: [] },
      { index: 100000000, data: "tlslog-100000000.jsonl", chain: null, leftovers: [] },
    ]);
    assert.deepStrictEqual(await listDataFiles(dir), [
      "tlslog-00000001.jsonl",
      "tlslog-00000002.jsonl.enc",
      "tlslog-00000010.jsonl",
      "tlslog-20000000.jsonl",
      "tlslog-100000000.jsonl",
    ]);
  });
});

Deno.test("listStoreFiles() prefers the compressed form and lists the original as a leftover", async () => {
  await withDir(async (dir) => {
    await touch(dir, [
      // Plain names first, so a pick of the first name seen would be wrong.
      "tlslog-00000003.jsonl",
      "tlslog-00000003.chain",
      "tlslog-00000003.jsonl.gz",
      "tlslog-00000003.chain.gz",
      "tlslog-00000004.jsonl.enc",
      "tlslog-00000004.jsonl.gz.enc",
      "tlslog-00000004.chain.gz",
      "tlslog-00000005.jsonl.gz",
      "tlslog-00000005.chain",
    ]);
    assert.deepStrictEqual(await listStoreFiles(dir), [
      {
        index: 3,
        data: "tlslog-00000003.jsonl.gz",
        chain: "tlslog-00000003.chain.gz",
        leftovers: ["tlslog-00000003.jsonl", "tlslog-00000003.chain"],
      },
      {
        index: 4,
        data: "tlslog-00000004.jsonl.gz.enc",
        chain: "tlslog-00000004.chain.gz",
        leftovers: ["tlslog-00000004.jsonl.enc"],
      },
      { index: 5, data: "tlslog-00000005.jsonl.gz", chain: "tlslog-00000005.chain", leftovers: [] },
    ]);
  });
});

Deno.test("listStoreFiles() ignores unrelated files and directories; an empty dir has none", async () => {
  await withDir(async (dir) => {
    assert.deepStrictEqual(await listStoreFiles(dir), []);
    await touch(dir, [
      "tlslog-commits.log",
      "tlslog-checkpoints.log",
      "tlslog-audit.log",
      "tlslog-1.jsonl",
      "tlslog-00000001.jsonl.tmp",
      "tlslog-00000001.jsonl.gz.tmp",
      "tlslog-00000001.json",
      "tlslog-0000000a.jsonl",
      "other-00000001.jsonl",
      "tlslog-00000001.jsonl.bak",
      "notes.txt",
    ]);
    await Deno.mkdir(join(dir, "tlslog-00000002.jsonl"));
    assert.deepStrictEqual(await listStoreFiles(dir), []);
    await touch(dir, ["tlslog-00000001.jsonl"]);
    assert.deepStrictEqual(await listStoreFiles(dir), [
      { index: 1, data: "tlslog-00000001.jsonl", chain: null, leftovers: [] },
    ]);
  });
});

Deno.test("readStoreFile() reads plain and gzip files; readStoreText() decodes UTF-8", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, dataFileName(1)), TEXT);
    await Deno.writeFile(join(dir, dataFileName(2, { gz: true })), gzipSync(enc.encode(TEXT)));
    await Deno.writeFile(join(dir, "tlslog-00000002.chain.gz"), gzipSync(enc.encode("chain\n")));
    const plain = await readStoreFile(dir, dataFileName(1));
    assert.ok(plain instanceof Uint8Array);
    assert.equal(dec.decode(plain), TEXT);
    assert.equal(dec.decode(await readStoreFile(dir, dataFileName(2, { gz: true }))), TEXT);
    assert.equal(await readStoreText(dir, dataFileName(2, { gz: true })), TEXT);
    assert.equal(await readStoreText(dir, "tlslog-00000002.chain.gz"), "chain\n");
    await Deno.writeTextFile(join(dir, dataFileName(3)), "");
    assert.equal((await readStoreFile(dir, dataFileName(3))).length, 0);
  });
});

Deno.test("readStoreFile() decrypts .enc and .gz.enc files with the key", async () => {
  await withDir(async (dir) => {
    const key = await keyFromBytes(rawKey(1));
    const other = await keyFromBytes(rawKey(2));
    const [a, b] = [enc.encode('{"id":0}\n{"id":1,"msg":"héllo ✓"}\n'), enc.encode('{"id":2}\n')];
    // Two records, as two write groups make.
    await Deno.writeFile(join(dir, dataFileName(1, { enc: true })), await sealed(key, [a, b]));
    await Deno.writeFile(
      join(dir, dataFileName(2, { gz: true, enc: true })),
      await sealed(key, [gzipSync(enc.encode(TEXT))]),
    );
    assert.equal(dec.decode(await readStoreFile(dir, dataFileName(1, { enc: true }), [key])), TEXT);
    assert.equal(dec.decode(await readStoreFile(dir, dataFileName(2, { gz: true, enc: true }), [other, key])), TEXT);
    assert.equal(await readStoreText(dir, dataFileName(2, { gz: true, enc: true }), [key]), TEXT);
  });
});

Deno.test("readStoreFile() reads the compressed form of a file compressed after it was listed", async () => {
  await withDir(async (dir) => {
    const key = await keyFromBytes(rawKey(3));
    await Deno.writeFile(join(dir, dataFileName(1, { gz: true })), gzipSync(enc.encode(TEXT)));
    await Deno.writeFile(
      join(dir, dataFileName(2, { gz: true, enc: true })),
      await sealed(key, [gzipSync(enc.encode(TEXT))]),
    );
    await Deno.writeFile(join(dir, "tlslog-00000001.chain.gz"), gzipSync(enc.encode("chain\n")));
    assert.equal(dec.decode(await readStoreFile(dir, dataFileName(1))), TEXT);
    assert.equal(dec.decode(await readStoreFile(dir, dataFileName(2, { enc: true }), [key])), TEXT);
    assert.equal(await readStoreText(dir, "tlslog-00000001.chain"), "chain\n");
    // Neither form: the original name's NotFound is not hidden, and a compressed name is not tried twice.
    await assert.rejects(readStoreFile(dir, dataFileName(3)), Deno.errors.NotFound);
    await assert.rejects(readStoreFile(dir, dataFileName(3, { gz: true })), Deno.errors.NotFound);
  });
});

Deno.test("readStoreFile() throws StoreFileError naming the file for damaged gzip data", async () => {
  await withDir(async (dir) => {
    const gz = gzipSync(enc.encode(TEXT.repeat(20)));
    const flipped = new Uint8Array(gz);
    flipped[flipped.length - 6]! ^= 0xff; // the CRC-32 in the trailer
    const cases: [string, Uint8Array][] = [
      [dataFileName(1, { gz: true }), gz.subarray(0, gz.length - 12)],
      [dataFileName(2, { gz: true }), flipped],
      [dataFileName(3, { gz: true }), enc.encode(TEXT)],
      ["tlslog-00000004.chain.gz", new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3])],
    ];
    for (const [name, bytes] of cases) {
      await Deno.writeFile(join(dir, name), bytes);
      await assert.rejects(
        readStoreFile(dir, name),
        (err: unknown) => err instanceof StoreFileError && err.message.startsWith(`${name}: damaged gzip data`),
        name,
      );
    }
    // Reached through the original name, the message names the compressed file.
    await assert.rejects(
      readStoreFile(dir, dataFileName(1)),
      (err: unknown) => err instanceof StoreFileError && err.message.startsWith(`${dataFileName(1, { gz: true })}:`),
    );
  });
});

Deno.test("readStoreFile() throws EncryptionKeyError for an encrypted file without its key", async () => {
  await withDir(async (dir) => {
    const key = await keyFromBytes(rawKey(4));
    const other = await keyFromBytes(rawKey(5));
    await Deno.writeFile(join(dir, dataFileName(1, { enc: true })), await sealed(key, [enc.encode(TEXT)]));
    await Deno.writeFile(
      join(dir, dataFileName(2, { gz: true, enc: true })),
      await sealed(key, [gzipSync(enc.encode(TEXT))]),
    );
    for (const name of [dataFileName(1, { enc: true }), dataFileName(2, { gz: true, enc: true })]) {
      await assert.rejects(
        readStoreFile(dir, name),
        (err: unknown) =>
          err instanceof EncryptionKeyError && err.message.includes(name) && err.message.includes(key.id),
      );
      await assert.rejects(readStoreFile(dir, name, [other]), EncryptionKeyError);
    }
    // The fallback to the compressed form needs the key too.
    await assert.rejects(readStoreFile(dir, dataFileName(2, { enc: true })), EncryptionKeyError);
  });
});
