import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import {
  chainFileName,
  ChainFormatError,
  chainLines,
  type ChainState,
  chainStep,
  formatChainHeader,
  fromHex,
  GENESIS,
  genesisState,
  parseChainFile,
  sameHash,
  toHex,
} from "./entry_chain.ts";

const enc = new TextEncoder();
const ZERO_HEX = "0".repeat(64);

/** SHA-256(prev || data[start..end)) computed independently of the module. */
function sha256Hex(prev: Uint8Array, data: Uint8Array, start = 0, end = data.length): string {
  return createHash("sha256").update(prev).update(data.subarray(start, end)).digest("hex");
}

/** Deterministic bytes that are not all alike. */
const bytes = (n: number, seed = 1) =>
  Uint8Array.from({ length: n }, (_, i) => (seed * 131 + i * 17 + (i >> 8)) & 0xff);

/** Heads and records of `lines`, computed independently of the module. */
function expectChain(prev: ChainState, lines: readonly string[]): { heads: string[]; records: string } {
  let head = toHex(prev.head);
  const heads: string[] = [];
  let records = "";
  lines.forEach((line, i) => {
    head = createHash("sha256").update(Buffer.from(head, "hex")).update(line).digest("hex");
    heads.push(head);
    records += `${prev.seq + i + 1} ${head}\n`;
  });
  return { heads, records };
}

const jsonLines = (from: number, n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ id: from + i }));

Deno.test("GENESIS and genesisState() are seq 0 with 32 zero bytes; chainFileName() pads to 8 digits", () => {
  assert.equal(toHex(GENESIS), ZERO_HEX);
  const g = genesisState();
  assert.equal(g.seq, 0);
  assert.equal(toHex(g.head), ZERO_HEX);
  assert.equal(chainFileName(7), "tlslog-00000007.chain");
  assert.equal(chainFileName(123456789), "tlslog-123456789.chain");
});

Deno.test("chainStep() is SHA-256(prev || data) for lengths around the SHA-256 block boundaries", () => {
  const prev = bytes(32, 9);
  // 55/56/64 straddle SHA-256's padding boundaries (with the 32-byte prefix too); 5000 outgrows the scratch buffer.
  for (const n of [0, 1, 23, 24, 31, 32, 55, 56, 63, 64, 65, 1000, 4064, 4065, 5000, 9000, 20000]) {
    const data = bytes(n, n);
    assert.equal(toHex(chainStep(prev, data)), sha256Hex(prev, data), `length ${n}`);
    assert.equal(toHex(chainStep(GENESIS, data)), sha256Hex(GENESIS, data), `length ${n} from genesis`);
  }
});

Deno.test("chainStep() hashes only data[start..end) of a subarray range", () => {
  const prev = bytes(32, 3);
  const data = bytes(300, 5);
  for (const [start, end] of [[0, 0], [10, 10], [10, 65], [100, 300], [0, 299], [1, 2]] as const) {
    assert.equal(toHex(chainStep(prev, data, start, end)), sha256Hex(prev, data, start, end), `${start}..${end}`);
  }
  // A subarray view with a non-zero byteOffset hashes its own bytes, not its buffer's.
  const view = data.subarray(40, 140);
  assert.equal(toHex(chainStep(prev, view)), sha256Hex(prev, data, 40, 140));
  assert.equal(toHex(chainStep(prev, view, 5, 60)), sha256Hex(prev, data, 45, 100));
  // Only `start` given: to the end.
  assert.equal(toHex(chainStep(prev, data, 250)), sha256Hex(prev, data, 250, 300));
});

Deno.test("chainStep() results stay valid after later calls (no shared scratch in the result)", () => {
  const prev = bytes(32, 1);
  const a = bytes(100, 2);
  const b = bytes(6000, 3);
  const ha = chainStep(prev, a);
  const expectA = sha256Hex(prev, a);
  // Chaining on a previous result, and a call that grows the scratch buffer.
  const hb = chainStep(ha, b);
  chainStep(hb, bytes(10, 4));
  assert.equal(toHex(ha), expectA);
  assert.equal(toHex(hb), sha256Hex(ha, b));
  assert.equal(ha.length, 32);
});

Deno.test("chainLines() gives one `<seq> <hex>` record per newline-terminated line", () => {
  const lines = jsonLines(0, 5);
  const data = enc.encode(lines.map((l) => l + "\n").join(""));
  const { state, records } = chainLines(genesisState(), data);
  const want = expectChain(genesisState(), lines);
  assert.equal(records, want.records);
  assert.equal(state.seq, 5);
  assert.equal(toHex(state.head), want.heads.at(-1));
  assert.match(records, /^(\d+ [0-9a-f]{64}\n){5}$/);
});

Deno.test("chainLines() continues from a given state and chains nothing for empty data", () => {
  const start: ChainState = { seq: 60, head: bytes(32, 7) };
  const lines = ['{"a":1}', "", '{"b":"x y"}'];
  const { state, records } = chainLines(start, enc.encode(lines.map((l) => l + "\n").join("")));
  const want = expectChain(start, lines);
  assert.equal(records, want.records);
  assert.ok(records.startsWith("61 "));
  assert.equal(state.seq, 63);
  assert.equal(toHex(state.head), want.heads.at(-1));

  const empty = chainLines(start, new Uint8Array(0));
  assert.equal(empty.records, "");
  assert.equal(empty.state.seq, 60);
  assert.ok(sameHash(empty.state.head, start.head));
});

Deno.test("chainLines() over two calls gives exactly what one call over the concatenation gives", () => {
  const first = enc.encode(jsonLines(0, 7).map((l) => l + "\n").join(""));
  const second = enc.encode(jsonLines(7, 9).map((l) => l + "\n").join(""));
  const whole = new Uint8Array([...first, ...second]);
  const once = chainLines(genesisState(), whole);
  const a = chainLines(genesisState(), first);
  const b = chainLines(a.state, second);
  assert.equal(a.records + b.records, once.records);
  assert.equal(b.state.seq, once.state.seq);
  assert.equal(b.state.seq, 16);
  assert.equal(toHex(b.state.head), toHex(once.state.head));
  assert.ok(sameHash(b.state.head, once.state.head));
});

Deno.test("parseChainFile() reads back formatChainHeader() and chainLines() records", () => {
  const prev: ChainState = { seq: 60, head: bytes(32, 11) };
  const header = formatChainHeader(7, prev);
  assert.equal(header, `{"chain":1,"file":7,"prev_seq":60,"prev":"${toHex(prev.head)}"}\n`);
  const lines = jsonLines(60, 4);
  const { state, records } = chainLines(prev, enc.encode(lines.map((l) => l + "\n").join("")));
  const parsed = parseChainFile(header + records, "tlslog-00000007.chain");
  assert.equal(parsed.file, 7);
  assert.equal(parsed.prev.seq, 60);
  assert.equal(toHex(parsed.prev.head), toHex(prev.head));
  assert.equal(parsed.torn, false);
  assert.deepStrictEqual(parsed.malformed, []);
  const want = expectChain(prev, lines);
  assert.deepStrictEqual(
    parsed.records.map((r) => [r.seq, toHex(r.hash), r.line]),
    want.heads.map((h, i) => [61 + i, h, i + 2]),
  );
  assert.ok(sameHash(parsed.records.at(-1)!.hash, state.head));

  const empty = parseChainFile(formatChainHeader(1, genesisState()), "x.chain");
  assert.deepStrictEqual(
    [empty.file, empty.prev.seq, toHex(empty.prev.head), empty.records, empty.malformed, empty.torn],
    [1, 0, ZERO_HEX, [], [], false],
  );
});

Deno.test("parseChainFile() flags a torn last line and leaves it out of the records", () => {
  const header = formatChainHeader(2, genesisState());
  const { records } = chainLines(genesisState(), enc.encode(jsonLines(0, 3).map((l) => l + "\n").join("")));
  const text = header + records;
  // Cut in the middle of the third record.
  const torn = parseChainFile(text.slice(0, text.length - 20), "c");
  assert.equal(torn.torn, true);
  assert.deepStrictEqual(torn.records.map((r) => r.seq), [1, 2]);
  assert.deepStrictEqual(torn.malformed, []);
  // Only the newline missing: still torn (it may be cut short), not counted.
  const noNewline = parseChainFile(text.slice(0, -1), "c");
  assert.equal(noNewline.torn, true);
  assert.deepStrictEqual(noNewline.records.map((r) => r.seq), [1, 2]);
  // A header alone, cut before its newline, is still read.
  const headerOnly = parseChainFile(header.slice(0, -1), "c");
  assert.deepStrictEqual([headerOnly.file, headerOnly.records.length, headerOnly.torn], [2, 0, true]);
});

Deno.test("parseChainFile() reports the line numbers of malformed lines", () => {
  const header = formatChainHeader(3, genesisState());
  const { records } = chainLines(genesisState(), enc.encode(jsonLines(0, 6).map((l) => l + "\n").join("")));
  const lines = records.slice(0, -1).split("\n");
  lines[1] = "garbage"; // file line 3
  lines[3] = lines[3]!.toUpperCase(); // file line 5: upper-case hex
  lines[4] = lines[4]!.slice(0, -2); // file line 6: hash too short
  lines.splice(5, 0, ""); // file line 7: an empty line
  const parsed = parseChainFile(header + lines.join("\n") + "\n", "c");
  assert.deepStrictEqual(parsed.malformed, [3, 5, 6, 7]);
  assert.deepStrictEqual(parsed.records.map((r) => [r.seq, r.line]), [[1, 2], [3, 4], [6, 8]]);
  assert.equal(parsed.torn, false);
  for (
    const bad of [
      "1  " + ZERO_HEX,
      " 1 " + ZERO_HEX,
      "x " + ZERO_HEX,
      "1 " + ZERO_HEX + " ",
      "1234567890123456 " + ZERO_HEX,
    ]
  ) {
    assert.deepStrictEqual(parseChainFile(header + bad + "\n", "c").malformed, [2], JSON.stringify(bad));
  }
});

Deno.test("parseChainFile() throws ChainFormatError naming the file for a missing or bad header", () => {
  const good = { chain: 1, file: 7, prev_seq: 60, prev: ZERO_HEX };
  const bad = [
    "",
    "\n",
    "not json\n1 " + ZERO_HEX + "\n",
    "1 " + ZERO_HEX + "\n",
    JSON.stringify({ ...good, chain: 2 }) + "\n",
    JSON.stringify({ ...good, file: "7" }) + "\n",
    JSON.stringify({ ...good, file: 1.5 }) + "\n",
    JSON.stringify({ ...good, prev_seq: -1 }) + "\n",
    JSON.stringify({ ...good, prev_seq: undefined }) + "\n",
    JSON.stringify({ ...good, prev: ZERO_HEX.slice(1) }) + "\n",
    JSON.stringify({ ...good, prev: ZERO_HEX.toUpperCase().replace(/0/g, "A") }) + "\n",
    JSON.stringify({ ...good, prev: undefined }) + "\n",
    "5\n",
    "[]\n",
  ];
  for (const text of bad) {
    assert.throws(
      () => parseChainFile(text, "tlslog-00000007.chain"),
      (err: unknown) => err instanceof ChainFormatError && /^tlslog-00000007\.chain line 1: /.test(err.message),
      JSON.stringify(text),
    );
  }
  assert.equal(parseChainFile(JSON.stringify(good) + "\n", "c").prev.seq, 60);
});

Deno.test({
  name: "parseChainFile() throws ChainFormatError for a header line that is JSON null",
  fn: () => {
    assert.throws(() => parseChainFile("null\n", "tlslog-00000007.chain"), ChainFormatError);
  },
});

Deno.test("toHex() and fromHex() round-trip; fromHex() rejects anything but 64 lowercase hex digits", () => {
  assert.equal(toHex(Uint8Array.of(0, 1, 15, 16, 255)), "00010f10ff");
  assert.equal(toHex(new Uint8Array(0)), "");
  for (let seed = 0; seed < 5; seed++) {
    const b = bytes(32, seed);
    const hex = toHex(b);
    assert.equal(hex, Buffer.from(b).toString("hex"));
    const back = fromHex(hex);
    assert.ok(back instanceof Uint8Array);
    assert.deepStrictEqual([...back!], [...b]);
  }
  const hex = toHex(bytes(32, 1));
  for (
    const bad of [
      "",
      hex.slice(0, 63),
      hex + "0",
      hex + "00",
      hex.toUpperCase(),
      "g" + hex.slice(1),
      ` ${hex.slice(1)}`,
      hex.slice(0, 62) + "\n",
    ]
  ) {
    assert.equal(fromHex(bad), null, JSON.stringify(bad));
  }
});

Deno.test("sameHash() compares contents, across Buffer and Uint8Array", () => {
  const a = bytes(32, 1);
  assert.ok(sameHash(a, new Uint8Array(a)));
  assert.ok(sameHash(a, Buffer.from(a)));
  assert.ok(sameHash(new Uint8Array(0), new Uint8Array(0)));
  for (const i of [0, 17, 31]) {
    const b = new Uint8Array(a);
    b[i]! ^= 1;
    assert.equal(sameHash(a, b), false, `byte ${i}`);
  }
  assert.equal(sameHash(a, a.subarray(0, 31)), false);
  assert.equal(sameHash(a.subarray(0, 31), a), false);
  // A head from chainStep (a node Buffer) equals the same hash parsed from hex.
  const head = chainStep(GENESIS, enc.encode('{"id":0}'));
  assert.ok(sameHash(head, fromHex(toHex(head))!));
});
