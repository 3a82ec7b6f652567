/**
 * A fuzzer for the collector's TLS port, and the campaign that runs it
 * against a `tlslog serve` child process while a well-behaved `tlslog send`
 * ships numbered entries. Used by tests/fuzz_campaign_test.ts (short run) and
 * bench/fuzz.ts (`deno task bench --only fuzz`, the long run).
 *
 * The fuzzer ({@linkcode runFuzz}) opens many connections, `parallel` at a
 * time, each of one type:
 *
 * - `v1` (TLS, no ALPN) and `v2` (TLS, ALPN `tlslog/2`): a random mix of
 *   malformed frames (random bytes, bad gzip, gzip bombs, invalid UTF-8,
 *   non-object JSON, nesting 10,000 deep, strings just over max-entry-bytes,
 *   frames over max-frame-bytes, wrong counts, wrong and duplicate sequence
 *   numbers, messages before HELLO, unknown types ...) sprinkled with valid
 *   ones (PING, small batches, STATUS), pipelined, while the answers are
 *   read and matched to the frames by position (both versions answer in
 *   order). Some end with a truncated frame: half a frame, or a length
 *   header near 2^32 followed by a few bytes, then close.
 * - `raw`: plain TCP garbage before any handshake (random bytes, HTTP, a
 *   frame without TLS, TLS-looking records, alerts).
 * - `client_hello`: a real ClientHello captured once, then mutated.
 * - `bad_alpn`: a TLS client offering only ALPN protocols the collector does
 *   not speak.
 * - `tls_inject`: a TLS session through a local relay that, after a valid
 *   exchange, injects garbage TLS records towards the collector.
 *
 * Every frame carries what the protocol says must happen to it
 * (`refuse`, `refuse_entries`, `accept`, `duplicate`, `silent`, `maybe`); a
 * `refuse` frame answered as accepted, or a duplicate stored again, is a
 * violation. How refusals are counted against `/api/stats` is explained at
 * {@linkcode FuzzReport}.
 *
 * @module
 */
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { ALPN_V2 } from "../shared/protocol.ts";
import { listDataFiles, readStoreFile } from "../server/store_files.ts";
import { type ServeProcess, spawnServe, testCerts } from "./test_support.ts";
import { type DeliveryReport, deliveryReport, freePort, spawnTlslog } from "./fault_support.ts";
import { concatBytes, writeAll } from "../shared/bytes.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// Seeded PRNG

/** sfc32 seeded through splitmix32: fast, deterministic, good enough for fuzzing. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** @param seed any 32-bit integer */
  constructor(seed: number) {
    let s = seed >>> 0;
    const split = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = split();
    this.#b = split();
    this.#c = split();
    this.#d = split();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One element of a non-empty array. */
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }

  /** One key of a weight table, with probability proportional to its weight. */
  weighted<T>(table: readonly (readonly [T, number])[]): T {
    let total = 0;
    for (const [, w] of table) total += w;
    let x = this.next() * total;
    for (const [k, w] of table) {
      if ((x -= w) < 0) return k;
    }
    return table[table.length - 1]![0];
  }

  /** n random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let k = 0; k < 4 && i + k < n; k++) out[i + k] = (v >>> (8 * k)) & 0xff;
    }
    return out;
  }

  /** A size skewed towards small values: up to `max`, mostly under max/16. */
  size(max: number): number {
    return Math.floor(max * this.next() ** 4);
  }

  /** An independent generator derived from this one. */
  fork(): Rng {
    return new Rng(this.u32());
  }
}

// ---------------------------------------------------------------------------
// Encoding helpers (own, so that any seq, count or length can be written)

/** The collector's limits, as set by `serve --max-*-bytes`. */
export interface FuzzLimits {
  maxFrameBytes: number;
  maxBatchBytes: number;
  maxEntryBytes: number;
}

/** `tlslog serve`'s default limits. */
export const SERVE_DEFAULT_LIMITS: FuzzLimits = {
  maxFrameBytes: 1 << 20,
  maxBatchBytes: 16 << 20,
  maxEntryBytes: 1 << 20,
};

function lengthHeader(length: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, length >>> 0);
  return out;
}

/** `[u32 BE length][payload]`. */
export function frameBytes(payload: Uint8Array): Uint8Array {
  return concatBytes([lengthHeader(payload.length), payload]);
}

function gz(data: string | Uint8Array, level = 1): Uint8Array {
  const buf = gzipSync(typeof data === "string" ? encoder.encode(data) : data, { level });
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** A v2 BATCH payload with any seq (u64) and count (u32). */
function batchPayload(seq: bigint, count: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(13 + body.length);
  const view = new DataView(out.buffer);
  out[0] = 0x02;
  view.setBigUint64(1, BigInt.asUintN(64, seq));
  view.setUint32(9, count >>> 0);
  out.set(body, 13);
  return out;
}

function typed(type: number, body: string | Uint8Array): Uint8Array {
  const b = typeof body === "string" ? encoder.encode(body) : body;
  const out = new Uint8Array(1 + b.length);
  out[0] = type;
  out.set(b, 1);
  return out;
}

function pingPayload(nonce: number): Uint8Array {
  const out = new Uint8Array(5);
  out[0] = 0x03;
  new DataView(out.buffer).setUint32(1, nonce >>> 0);
  return out;
}

const MAX_SAFE_SEQ = BigInt(Number.MAX_SAFE_INTEGER);

// ---------------------------------------------------------------------------
// Malformed material

/** Byte sequences that are not UTF-8: stray continuation bytes, overlong forms, surrogates, > U+10FFFF, cut ones. */
const BAD_UTF8: readonly (readonly number[])[] = [
  [0x80],
  [0xbf],
  [0xc0, 0xaf],
  [0xc1, 0xbf],
  [0xe0, 0x80, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf],
  [0xf4, 0x90, 0x80, 0x80],
  [0xf5, 0x80, 0x80, 0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0xfe],
  [0xff],
  [0xc3],
  [0xe2, 0x82],
  [0xf0, 0x9f, 0x98],
];

/** One line of text that is valid UTF-8 but not one JSON object (no newline, no BOM, no trailing whitespace trick). */
const NON_OBJECTS: readonly string[] = [
  "[]",
  "[1,2,3]",
  '["fuzz",{"a":1}]',
  '"fuzz"',
  '""',
  "42",
  "-0.5e10",
  "1e999",
  "null",
  "true",
  "false",
  "",
  " ",
  "\t",
  "{",
  "}",
  '{"a":}',
  '{"a" 1}',
  "{'a':1}",
  '{"a":1,}',
  '{"a":1}{"b":2}',
  '{"a":1},',
  '{"a":undefined}',
  '{"a":NaN}',
  "NaN",
  "undefined",
  '{"a":"\u0000"}',
  '{"a":1}\u0000',
  "{a:1}",
  '{"a":01}',
  '{"a":"\\x41"}',
  '{"a":"\\ud800"', // cut
  "/* comment */ {}",
  '{"a":1}//',
];

function fuzzLine(rng: Rng, tag: string): string {
  return JSON.stringify({ fuzz: tag, n: rng.u32() });
}

/** Characters of a huge string: ASCII with some 2-, 3- and 4-byte characters; none needs escaping. */
const HUGE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:é€😀";

/** `{"fuzz":"huge","s":"..."}` of exactly `bytes` bytes of UTF-8 (bytes >= 64). */
function hugeEntry(rng: Rng, bytes: number): string {
  const head = '{"fuzz":"huge","s":"';
  const tail = '"}';
  let budget = bytes - head.length - tail.length;
  const parts: string[] = [];
  while (budget > 4) {
    const c = rng.chance(0.9) ? HUGE_CHARS[rng.int(0, 65)]! : rng.pick(["é", "€", "😀"]);
    const n = encoder.encode(c).length;
    parts.push(c);
    budget -= n;
  }
  while (budget-- > 0) parts.push("x");
  return head + parts.join("") + tail;
}

/** Nesting `depth` deep: arrays (not an object), objects (an object), or mixed (an object). */
function deepJson(shape: "array" | "object" | "mixed", depth: number): string {
  if (shape === "array") return "[".repeat(depth) + "]".repeat(depth);
  if (shape === "object") return '{"fuzz":"deep","n":' + '{"a":'.repeat(depth) + "1" + "}".repeat(depth) + "}";
  return '{"fuzz":"deep","n":' + '[{"a":'.repeat(depth) + "1" + "}]".repeat(depth) + "}";
}

/** Payloads that are cached because they are costly to make. */
class Corpus {
  /** gzip data (one member or several) inflating past max-batch-bytes; `lines` when it is valid JSON lines. */
  readonly bombs: { gz: Uint8Array; lines: number | null }[] = [];
  /** Over-long single entries (text) and their gzip. */
  readonly hugeOver: { text: string; gz: Uint8Array; gzLine: Uint8Array }[] = [];
  /** Entries of at most max-entry-bytes, near it. */
  readonly hugeNear: { text: string; gz: Uint8Array; gzLine: Uint8Array }[] = [];
  /** Deeply nested lines and their gzip. */
  readonly deep: {
    shape: "array" | "object" | "mixed";
    depth: number;
    text: string;
    gz: Uint8Array;
    gzLine: Uint8Array;
  }[] = [];
  /** Real ClientHello records, captured from Deno.connectTls. */
  clientHellos: Uint8Array[] = [];

  constructor(readonly limits: FuzzLimits, rng: Rng) {
    const over = limits.maxBatchBytes + 1;
    this.bombs.push({ gz: gz(new Uint8Array(over), 9), lines: null });
    this.bombs.push({ gz: gz(new Uint8Array(over + rng.int(1, 1 << 16)).fill(0x41), 9), lines: null });
    const line = '{"fuzz":"bomb"}\n';
    const n = Math.ceil(over / line.length);
    this.bombs.push({ gz: gz(line.repeat(n), 9), lines: n });
    // Two members, each under the limit, together over it.
    const half = gz(new Uint8Array(Math.ceil(over / 2) + 1), 9);
    this.bombs.push({ gz: concatBytes([half, half]), lines: null });
    const e = limits.maxEntryBytes;
    for (const bytes of [e + 1, e + 2, e + 3, e + rng.int(4, 1000), e + rng.int(1000, 5000), 2 * e]) {
      const text = hugeEntry(rng, bytes);
      this.hugeOver.push({ text, gz: gz(text), gzLine: gz(text + "\n") });
    }
    for (const bytes of [e, e - 1, e - 2, e - 3, e - rng.int(4, 1000)]) {
      if (bytes < 64) continue;
      const text = hugeEntry(rng, bytes);
      this.hugeNear.push({ text, gz: gz(text), gzLine: gz(text + "\n") });
    }
    const deepest = Math.floor((e - 24) / 6);
    const shapes: ["array" | "object" | "mixed", number][] = [
      ["array", 10_000],
      ["object", 10_000],
      ["mixed", 10_000],
      ["array", Math.max(10, Math.floor((e - 4) / 2))],
      ["object", Math.max(10, deepest)],
    ];
    for (const [shape, depth] of shapes) {
      const text = deepJson(shape, depth);
      this.deep.push({ shape, depth, text, gz: gz(text), gzLine: gz(text + "\n") });
    }
  }

  /** Captures the ClientHello records Deno.connectTls sends (with and without ALPN), for mutation. */
  async captureClientHellos(caCert: string): Promise<void> {
    for (const alpn of [undefined, [ALPN_V2]]) {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (listener.addr as Deno.NetAddr).port;
      const client = Deno.connectTls({ hostname: "localhost", port, caCerts: [caCert], alpnProtocols: alpn })
        .then((c) => c.handshake().finally(() => c.close()))
        .catch(() => {});
      const conn = await listener.accept();
      try {
        const got = await readAtLeast(conn, 5, 5_000);
        const length = got.length >= 5 ? new DataView(got.buffer, got.byteOffset).getUint16(3) : 0;
        const all = got.length >= 5 + length
          ? got
          : concatBytes([got, await readAtLeast(conn, 5 + length - got.length, 5_000)]);
        if (all.length >= 5 + length && all[0] === 0x16) this.clientHellos.push(all.slice(0, 5 + length));
      } finally {
        conn.close();
        listener.close();
        await client;
      }
    }
  }
}

/** Reads until at least `n` bytes arrived, the peer closed, or `ms` passed. */
async function readAtLeast(conn: Deno.Conn, n: number, ms: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let got = 0;
  const deadline = performance.now() + ms;
  while (got < n && performance.now() < deadline) {
    const buf = new Uint8Array(Math.max(4096, n - got));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      conn.read(buf).catch(() => null),
      new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), deadline - performance.now())),
    ]);
    clearTimeout(timer);
    if (r === null || r === "timeout") break;
    parts.push(buf.subarray(0, r));
    got += r;
  }
  return concatBytes(parts);
}

// ---------------------------------------------------------------------------
// Frames and their expected fate

/**
 * What the protocol says must happen to a frame.
 *
 * - `refuse`: the whole frame is refused (v1 error answer, v2 NACK): at least one refusal counted.
 * - `refuse_entries`: a v2 batch in which at least one line must be refused (ACK `rejected`); at
 *   least one refusal counted (entry-level, or frame-level should the whole batch be refused).
 * - `accept`: answered as stored / WELCOME / PONG.
 * - `duplicate`: a BATCH whose seq was already accepted on the stream: ACK `duplicate`, nothing stored.
 * - `silent`: not answered (a valid STATUS).
 * - `maybe`: the protocol does not decide (deep objects, which a depth limit may refuse; a body with a BOM).
 */
export type Expect = "refuse" | "refuse_entries" | "accept" | "duplicate" | "silent" | "maybe";

/** One frame (or raw byte string) the fuzzer writes. */
interface Frame {
  kind: string;
  wire: Uint8Array;
  expect: Expect;
  /** The refusal code the docs name for it, when known (report only). */
  code?: string;
  /** Counts as a malformed input (valid frames mixed in do not). */
  malformed: boolean;
  /** JSON lines it carries that may be stored (fuzz-marked), for the report. */
  mayStore?: number;
  /** Lines in a v2 batch or 1 for a v1 entry (for the upper bound of entry refusals). */
  lines?: number;
  /** v2 BATCH seq, when it is a readable one. */
  seq?: number;
}

function mk(
  kind: string,
  payload: Uint8Array,
  expect: Expect,
  extra: Partial<Omit<Frame, "kind" | "wire" | "expect">> = {},
): Frame {
  return { kind, wire: frameBytes(payload), expect, malformed: true, ...extra };
}

/** A frame whose payload exceeds max-frame-bytes, fully sent: the collector skips it and answers frame_too_large. */
function oversized(kind: string, rng: Rng, limits: FuzzLimits, head: Uint8Array, seq?: number): Frame {
  const length = limits.maxFrameBytes + rng.pick([1, 2, rng.int(3, 4096)]);
  const wire = new Uint8Array(4 + length);
  new DataView(wire.buffer).setUint32(0, length);
  wire.set(head.subarray(0, Math.min(head.length, length)), 4);
  if (rng.chance(0.5)) wire.set(rng.bytes(Math.min(4096, length - head.length)), 4 + head.length);
  return { kind, wire, expect: "refuse", code: "frame_too_large", malformed: true, seq };
}

/** Payloads of ≤ max-frame-bytes only: anything else is refused as frame_too_large whatever it holds. */
function capped(f: Frame, limits: FuzzLimits): Frame {
  if (f.wire.length - 4 > limits.maxFrameBytes && f.expect !== "refuse") {
    return { ...f, expect: "refuse", code: "frame_too_large", mayStore: 0 };
  }
  return f;
}

/** A broken gzip stream: random, header then garbage, cut, bad CRC, bad length, bad deflate block, empty. */
function badGzip(rng: Rng, content: string): Uint8Array {
  const good = gz(content);
  switch (rng.int(0, 6)) {
    case 0:
      return rng.bytes(rng.int(1, 512));
    case 1:
      return concatBytes([new Uint8Array([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff]), rng.bytes(rng.int(0, 256))]);
    case 2:
      return good.slice(0, rng.int(1, good.length - 1));
    case 3: {
      const out = good.slice();
      out[out.length - 8 + rng.int(0, 3)]! ^= 1 << rng.int(0, 7);
      return out;
    }
    case 4: {
      const out = good.slice();
      out[out.length - 4 + rng.int(0, 3)]! ^= 1 << rng.int(0, 7);
      return out;
    }
    case 5: {
      const out = good.slice();
      out[10] = 0xff; // reserved deflate block type
      return out;
    }
    default:
      return new Uint8Array(0);
  }
}

/** `{"fuzz":"utf8","s":"..<bad bytes>.."}` */
function badUtf8Entry(rng: Rng): Uint8Array {
  return concatBytes([
    encoder.encode('{"fuzz":"utf8","s":"ab'),
    new Uint8Array(rng.pick(BAD_UTF8)),
    rng.chance(0.5) ? encoder.encode("cd") : new Uint8Array(0),
    encoder.encode('"}'),
  ]);
}

// --- v1 -------------------------------------------------------------------

const V1_KINDS = [
  ["v1_random_bytes", 14],
  ["v1_empty_frame", 3],
  ["v1_bad_gzip", 12],
  ["v1_bomb", 4],
  ["v1_bad_utf8", 10],
  ["v1_non_object", 14],
  ["v1_gzip_of_garbage", 6],
  ["v1_deep_array", 2],
  ["v1_deep_object", 1],
  ["v1_huge_over", 2],
  ["v1_oversized", 0.6],
  ["v1_v2_message", 5],
  // valid, mixed in
  ["v1_valid", 3],
  ["v1_huge_near", 0.5],
] as const;

function v1Frame(rng: Rng, corpus: Corpus, kinds: readonly (readonly [string, number])[] = V1_KINDS): Frame {
  const limits = corpus.limits;
  const kind = rng.weighted(kinds) as (typeof V1_KINDS)[number][0];
  switch (kind) {
    case "v1_random_bytes": {
      const b = rng.bytes(rng.int(1, 1) + rng.size(8192));
      if (b[0] === 0x1f) b[0] = 0x00; // never the gzip magic
      return mk(kind, b, "refuse", { code: "bad_gzip" });
    }
    case "v1_empty_frame":
      return mk(kind, new Uint8Array(0), "refuse", { code: "bad_gzip" });
    case "v1_bad_gzip":
      return mk(kind, badGzip(rng, fuzzLine(rng, "v1_bad_gzip")), "refuse", { code: "bad_gzip" });
    case "v1_bomb":
      return capped(mk(kind, rng.pick(corpus.bombs).gz, "refuse", { code: "decompressed_too_large" }), limits);
    case "v1_bad_utf8":
      return mk(kind, gz(badUtf8Entry(rng)), "refuse", { code: "invalid_entry" });
    case "v1_non_object":
      return mk(kind, gz(rng.pick(NON_OBJECTS)), "refuse", { code: "invalid_entry" });
    case "v1_gzip_of_garbage": {
      // Decompresses fine; what comes out is binary: not UTF-8, or not JSON.
      const b = rng.bytes(rng.int(1, 2048));
      b[0] = 0xff;
      return mk(kind, gz(b), "refuse", { code: "invalid_entry" });
    }
    case "v1_deep_array": {
      const d = rng.pick(corpus.deep.filter((x) => x.shape === "array"));
      const tooBig = encoder.encode(d.text).length > limits.maxEntryBytes;
      return capped(mk(kind, d.gz, "refuse", { code: tooBig ? "entry_too_large" : "invalid_entry" }), limits);
    }
    case "v1_deep_object": {
      const d = rng.pick(corpus.deep.filter((x) => x.shape !== "array"));
      const tooBig = d.text.length > limits.maxEntryBytes;
      return capped(
        mk(kind, d.gz, tooBig ? "refuse" : "maybe", tooBig ? { code: "entry_too_large" } : { mayStore: 1, lines: 1 }),
        limits,
      );
    }
    case "v1_huge_over":
      return capped(mk(kind, rng.pick(corpus.hugeOver).gz, "refuse", { code: "entry_too_large" }), limits);
    case "v1_oversized":
      return oversized(kind, rng, limits, new Uint8Array([0x1f, 0x8b, 0x08]));
    case "v1_v2_message": {
      // A v2 message sent to a v1 connection: not gzip.
      const p = rng.pick([
        () => typed(0x01, '{"stream":"fuzz"}'),
        () => batchPayload(1n, 1, gz('{"fuzz":"v2-on-v1"}\n')),
        () => pingPayload(rng.u32()),
        () => typed(0x04, "{}"),
      ])();
      return mk(kind, p, "refuse", { code: "bad_gzip" });
    }
    case "v1_valid":
      return mk(kind, gz(fuzzLine(rng, "v1")), "accept", { malformed: false, mayStore: 1, lines: 1 });
    case "v1_huge_near":
      return capped(
        mk(kind, rng.pick(corpus.hugeNear).gz, "accept", { malformed: false, mayStore: 1, lines: 1 }),
        limits,
      );
  }
}

// --- v2 -------------------------------------------------------------------

/** What the generator knows of its v2 connection. */
interface V2State {
  stream: string;
  helloSent: boolean;
  /** Highest seq sent in any BATCH that may have been accepted. */
  maxSent: number;
  /** Highest seq of a batch that the protocol says must be accepted (stored, or refused line by line). */
  claimed: number;
  /** The next fresh seq. */
  seq: number;
}

const V2_PRE_HELLO_KINDS = [
  ["v2_no_hello_batch", 6],
  ["v2_no_hello_status", 3],
  ["v2_bad_hello", 6],
  ["v2_random_frame", 6],
  ["v2_bad_seq", 2],
  ["v2_short_batch", 2],
  ["v2_unknown_type", 2],
  ["v2_empty_frame", 1],
  ["v2_bad_ping", 1],
  ["v2_ping", 1],
] as const;

const V2_KINDS = [
  ["v2_random_frame", 12],
  ["v2_bad_gzip", 10],
  ["v2_bomb", 4],
  ["v2_bad_utf8", 8],
  ["v2_wrong_count", 8],
  ["v2_non_object_lines", 10],
  ["v2_deep_array", 2],
  ["v2_deep_object", 1],
  ["v2_huge_over", 2],
  ["v2_dup_seq", 8],
  ["v2_bad_seq", 4],
  ["v2_short_batch", 3],
  ["v2_unknown_type", 4],
  ["v2_server_type", 3],
  ["v2_empty_frame", 2],
  ["v2_bad_ping", 2],
  ["v2_second_hello", 2],
  ["v2_bad_status", 3],
  ["v2_bom_body", 0.5],
  ["v2_oversized", 0.6],
  // valid, mixed in
  ["v2_ping", 3],
  ["v2_valid_batch", 2],
  ["v2_status", 2],
  ["v2_huge_near", 0.5],
] as const;

function helloFrame(state: V2State): Frame {
  state.helloSent = true;
  return mk("v2_hello", typed(0x01, JSON.stringify({ stream: state.stream, client: "fuzz" })), "accept", {
    malformed: false,
  });
}

/** A BATCH with a fresh seq (greater than any sent on the connection). */
function freshBatch(state: V2State, count: number, body: Uint8Array): { payload: Uint8Array; seq: number } {
  const seq = state.seq++;
  return { payload: batchPayload(BigInt(seq), count, body), seq };
}

function validLines(rng: Rng, n: number, tag: string): string[] {
  return Array.from({ length: n }, () => fuzzLine(rng, tag));
}

/** A payload of random bytes, classified exactly by its type byte. */
function v2RandomFrame(rng: Rng, state: V2State): Frame {
  const len = rng.chance(0.05) ? 0 : rng.int(1, 16) + rng.size(2048);
  const p = rng.bytes(len);
  if (len > 0 && rng.chance(0.5)) p[0] = rng.pick([0x01, 0x02, 0x03, 0x04, 0x81, 0x82, 0x83, 0x84]);
  const kind = "v2_random_frame";
  if (len === 0) return mk(kind, p, "refuse", { code: "bad_message" });
  const type = p[0]!;
  const json = () => {
    try {
      const v: unknown = JSON.parse(decoder.decode(p.subarray(1)));
      return typeof v === "object" && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : null;
    } catch {
      return null;
    }
  };
  switch (type) {
    case 0x01: {
      const v = json();
      const ok = !state.helloSent && v && typeof v.stream === "string" && v.stream.length >= 1 &&
        v.stream.length <= 128;
      return mk(kind, p, ok ? "maybe" : "refuse", { code: "bad_message" });
    }
    case 0x02: {
      if (len < 13) return mk(kind, p, "refuse", { code: "bad_message" });
      const seq = new DataView(p.buffer).getBigUint64(1);
      if (seq < 1n || seq > MAX_SAFE_SEQ) return mk(kind, p, "refuse", { code: "bad_seq" });
      if (!state.helloSent) return mk(kind, p, "refuse", { code: "no_hello" });
      const n = Number(seq);
      if (n <= state.claimed) return mk(kind, p, "duplicate", { seq: n });
      if (n <= state.maxSent) return mk(kind, p, "maybe", { seq: n });
      // Random bytes are not gzip (the magic is 1f 8b); the batch is refused and claims nothing.
      p[13] = 0x00;
      return mk(kind, p, "refuse", { code: "bad_gzip", seq: n });
    }
    case 0x03:
      return len === 5 ? mk(kind, p, "accept") : mk(kind, p, "refuse", { code: "bad_message" });
    case 0x04: {
      const v = json();
      if (v === null) return mk(kind, p, "refuse", { code: "bad_message" });
      return state.helloSent ? mk(kind, p, "silent") : mk(kind, p, "refuse", { code: "no_hello" });
    }
    default:
      if (type >= 0x81 && type <= 0x84) return mk(kind, p, "refuse", { code: "bad_message" });
      return mk(kind, p, "refuse", { code: "unknown_type" });
  }
}

/** Builds a gzip body from lines, some of which come as cached gzip members. */
function bodyOf(parts: readonly (string | Uint8Array)[]): Uint8Array {
  // Consecutive text lines make one member; a cached member is appended as is (multi-member gzip).
  const out: Uint8Array[] = [];
  let text = "";
  for (const p of parts) {
    if (typeof p === "string") text += p + "\n";
    else {
      if (text) out.push(gz(text));
      text = "";
      out.push(p);
    }
  }
  if (text || out.length === 0) out.push(gz(text));
  return concatBytes(out);
}

function v2Frame(
  rng: Rng,
  corpus: Corpus,
  state: V2State,
  kinds: readonly (readonly [string, number])[] = V2_KINDS,
  preHelloKinds: readonly (readonly [string, number])[] = V2_PRE_HELLO_KINDS,
): Frame {
  const limits = corpus.limits;
  if (!state.helloSent) {
    const kind = rng.weighted(preHelloKinds) as (typeof V2_PRE_HELLO_KINDS)[number][0];
    switch (kind) {
      case "v2_no_hello_batch": {
        const lines = validLines(rng, rng.int(1, 3), "no_hello");
        // A fresh seq is not used: no HELLO, so nothing is claimed.
        const payload = batchPayload(BigInt(rng.int(1, 1000)), lines.length, bodyOf(lines));
        return mk(kind, payload, "refuse", { code: "no_hello", lines: lines.length });
      }
      case "v2_no_hello_status":
        return mk(kind, typed(0x04, '{"spool_entries":1}'), "refuse", { code: "no_hello" });
      case "v2_bad_hello":
        return badHello(rng);
      case "v2_random_frame":
        return v2RandomFrame(rng, state);
      default:
        return v2Common(kind, rng, state, limits);
    }
  }
  const kind = rng.weighted(kinds) as (typeof V2_KINDS)[number][0];
  switch (kind) {
    case "v2_random_frame":
      return v2RandomFrame(rng, state);
    case "v2_bad_gzip": {
      const lines = validLines(rng, rng.int(1, 5), "bad_gzip");
      const { payload, seq } = freshBatch(state, lines.length, badGzip(rng, lines.join("\n") + "\n"));
      return mk(kind, payload, "refuse", { code: "bad_gzip", seq, lines: lines.length });
    }
    case "v2_bomb": {
      const bomb = rng.pick(corpus.bombs);
      const { payload, seq } = freshBatch(state, bomb.lines ?? rng.int(0, 10), bomb.gz);
      return capped(mk(kind, payload, "refuse", { code: "decompressed_too_large", seq }), limits);
    }
    case "v2_bad_utf8": {
      const lines: Uint8Array[] = validLines(rng, rng.int(0, 4), "utf8").map((l) => encoder.encode(l + "\n"));
      lines.splice(rng.int(0, lines.length), 0, concatBytes([badUtf8Entry(rng), encoder.encode("\n")]));
      const { payload, seq } = freshBatch(state, lines.length, gz(concatBytes(lines)));
      return mk(kind, payload, "refuse", { code: "bad_utf8", seq, lines: lines.length });
    }
    case "v2_wrong_count": {
      const lines = validLines(rng, rng.int(0, 6), "count");
      let body = lines.join("\n") + (lines.length > 0 ? "\n" : "");
      let count: number;
      switch (rng.int(0, 3)) {
        case 0:
          count = lines.length + rng.int(1, 3);
          break;
        case 1:
          count = lines.length === 0 ? 1 : rng.int(0, lines.length - 1);
          break;
        case 2:
          count = rng.pick([0xffffffff, 0x80000000, 0xfffffffe]);
          break;
        default:
          // No final newline: refused whatever the count.
          if (lines.length === 0) lines.push(fuzzLine(rng, "count"));
          body = lines.join("\n");
          count = lines.length;
      }
      const { payload, seq } = freshBatch(state, count, gz(body));
      return mk(kind, payload, "refuse", { code: "bad_batch", seq, lines: lines.length });
    }
    case "v2_non_object_lines": {
      const lines = validLines(rng, rng.int(0, 4), "mixed");
      const bad = rng.int(1, 4);
      for (let i = 0; i < bad; i++) lines.splice(rng.int(0, lines.length), 0, rng.pick(NON_OBJECTS));
      const { payload, seq } = freshBatch(state, lines.length, bodyOf(lines));
      state.claimed = state.maxSent = seq;
      return mk(kind, payload, "refuse_entries", {
        code: "invalid_entry",
        seq,
        lines: lines.length,
        mayStore: lines.length - bad,
      });
    }
    case "v2_deep_array":
    case "v2_deep_object": {
      const d = rng.pick(corpus.deep.filter((x) => (x.shape === "array") === (kind === "v2_deep_array")));
      const others = validLines(rng, rng.int(0, 2), "deep_neighbour");
      const { payload, seq } = freshBatch(state, others.length + 1, bodyOf([...others, d.gzLine]));
      const tooBig = encoder.encode(d.text).length > limits.maxEntryBytes;
      if (kind === "v2_deep_array" || tooBig) {
        state.claimed = state.maxSent = seq;
        const code = tooBig ? "entry_too_large" : "invalid_entry";
        return capped(
          mk(kind, payload, "refuse_entries", { code, seq, lines: others.length + 1, mayStore: others.length }),
          limits,
        );
      }
      state.maxSent = seq; // a depth limit might refuse the whole batch: claimed stays where it is
      return capped(mk(kind, payload, "maybe", { seq, lines: others.length + 1, mayStore: others.length + 1 }), limits);
    }
    case "v2_huge_over": {
      const h = rng.pick(corpus.hugeOver);
      const others = validLines(rng, rng.int(0, 2), "huge_neighbour");
      const parts: (string | Uint8Array)[] = [...others];
      parts.splice(rng.int(0, parts.length), 0, h.gzLine);
      const { payload, seq } = freshBatch(state, parts.length, bodyOf(parts));
      const f = capped(
        mk(kind, payload, "refuse_entries", {
          code: "entry_too_large",
          seq,
          lines: parts.length,
          mayStore: others.length,
        }),
        limits,
      );
      if (f.expect === "refuse_entries") state.claimed = state.maxSent = seq;
      return f;
    }
    case "v2_huge_near": {
      const h = rng.pick(corpus.hugeNear);
      const { payload, seq } = freshBatch(state, 1, h.gzLine);
      const f = capped(mk(kind, payload, "accept", { seq, lines: 1, mayStore: 1, malformed: false }), limits);
      if (f.expect === "accept") state.claimed = state.maxSent = seq;
      return f;
    }
    case "v2_dup_seq": {
      if (state.claimed === 0) return anchorBatch(rng, state);
      // Equal to, or below, a seq the collector has accepted: a resend, answered as a duplicate and
      // never decompressed. Half carry garbage (a collector that decompresses them would refuse them),
      // half fuzz entries tagged "dup" (one that stores them again would be caught in the store).
      const seq = rng.pick([state.claimed, rng.int(1, state.claimed)]);
      const lines = validLines(rng, rng.int(1, 4), "dup");
      const body = rng.chance(0.5) ? rng.bytes(rng.int(0, 64)) : gz(lines.join("\n") + "\n");
      return mk(kind, batchPayload(BigInt(seq), lines.length, body), "duplicate", { seq, lines: lines.length });
    }
    case "v2_bom_body": {
      // A body starting with a UTF-8 BOM: TextDecoder drops it, so the lines look valid, but "stored byte
      // for byte" keeps it. The protocol does not say which; the store check reports stored non-JSON lines.
      const lines = validLines(rng, rng.int(1, 3), "bom");
      const body = gz(concatBytes([new Uint8Array([0xef, 0xbb, 0xbf]), encoder.encode(lines.join("\n") + "\n")]));
      const { payload, seq } = freshBatch(state, lines.length, body);
      state.maxSent = seq;
      return mk(kind, payload, "maybe", { seq, lines: lines.length, mayStore: lines.length });
    }
    case "v2_second_hello":
      return mk(kind, typed(0x01, JSON.stringify({ stream: state.stream })), "refuse", { code: "bad_message" });
    case "v2_bad_status": {
      const body = rng.pick(["[]", '"s"', "1", "null", "", "{", '{"spool_entries":', "\xff"]);
      return mk(kind, typed(0x04, body), "refuse", { code: "bad_message" });
    }
    case "v2_oversized": {
      const { payload, seq } = freshBatch(state, 1, new Uint8Array(0));
      return rng.chance(0.8)
        ? oversized(kind, rng, limits, payload.subarray(0, 13), seq)
        : oversized(kind, rng, limits, new Uint8Array([rng.pick([0x01, 0x03, 0x04, 0x7f])]));
    }
    case "v2_ping":
      return mk(kind, pingPayload(rng.u32()), "accept", { malformed: false });
    case "v2_valid_batch":
      return anchorBatch(rng, state);
    case "v2_status": {
      const odd = rng.chance(0.5);
      const status = odd
        ? rng.pick([
          '{"spool_entries":-1,"spool_bytes":"x","oldest_unacked_ms":1e308,"retries":null,"dropped":[1]}',
          '{"unknown":{"deep":[1,2,3]}}',
          "{}",
          '{"oldest_unacked_ms":null,"retries":1.5}',
        ])
        : JSON.stringify({ spool_entries: 0, spool_bytes: 0, oldest_unacked_ms: null, retries: 0, dropped: 0 });
      return mk(odd ? "v2_status_odd" : kind, typed(0x04, status), "silent", { malformed: false });
    }
    default:
      return v2Common(kind, rng, state, limits);
  }
}

/** A valid batch (0 to 3 fuzz entries) that the collector must accept; it makes later duplicates possible. */
function anchorBatch(rng: Rng, state: V2State): Frame {
  const lines = validLines(rng, rng.int(0, 3), "anchor");
  const { payload, seq } = freshBatch(state, lines.length, bodyOf(lines));
  state.claimed = state.maxSent = seq;
  return mk("v2_valid_batch", payload, "accept", {
    malformed: false,
    seq,
    lines: lines.length,
    mayStore: lines.length,
  });
}

function badHello(rng: Rng): Frame {
  const body = rng.pick([
    "",
    "[]",
    '"stream"',
    "{}",
    '{"stream":""}',
    `{"stream":"${"s".repeat(129)}"}`,
    '{"stream":42}',
    '{"stream":null}',
    '{"stream":"s"',
    "\xff\xfe",
  ]);
  const bytes = body === "\xff\xfe" ? new Uint8Array([0xff, 0xfe]) : encoder.encode(body);
  return mk("v2_bad_hello", typed(0x01, bytes), "refuse", { code: "bad_message" });
}

function v2Common(kind: string, rng: Rng, state: V2State, limits: FuzzLimits): Frame {
  switch (kind) {
    case "v2_bad_seq": {
      const seq = rng.pick([0n, MAX_SAFE_SEQ + 1n, 0xffff_ffff_ffff_ffffn, (1n << 63n) + BigInt(rng.u32())]);
      const body = gz(fuzzLine(rng, "bad_seq") + "\n");
      return mk(kind, batchPayload(seq, 1, body), "refuse", { code: "bad_seq", lines: 1 });
    }
    case "v2_short_batch":
      return mk(kind, concatBytes([new Uint8Array([0x02]), rng.bytes(rng.int(0, 11))]), "refuse", {
        code: "bad_message",
      });
    case "v2_unknown_type": {
      let type = rng.int(0, 255);
      if ((type >= 1 && type <= 4) || (type >= 0x81 && type <= 0x84)) type = rng.pick([0x00, 0x05, 0x7f, 0x80, 0xff]);
      return mk(kind, concatBytes([new Uint8Array([type]), rng.bytes(rng.size(256))]), "refuse", {
        code: "unknown_type",
      });
    }
    case "v2_server_type": {
      const type = rng.int(0x81, 0x84);
      const body = rng.pick([
        () => encoder.encode('{"seq":1,"stored":1}'),
        () => rng.bytes(4),
        () => encoder.encode(JSON.stringify({ stream: state.stream, last_seq: 0 })),
        () => new Uint8Array(0),
      ])();
      return mk(kind, typed(type, body), "refuse", { code: "bad_message" });
    }
    case "v2_empty_frame":
      return mk(kind, new Uint8Array(0), "refuse", { code: "bad_message" });
    case "v2_bad_ping": {
      const n = rng.pick([0, 1, 2, 3, 5, 8, 100]);
      return mk(kind, concatBytes([new Uint8Array([0x03]), rng.bytes(n)]), "refuse", { code: "bad_message" });
    }
    case "v2_ping":
      return mk(kind, pingPayload(rng.u32()), "accept", { malformed: false });
    default:
      throw new Error(`no generator for ${kind} (limits ${JSON.stringify(limits)})`);
  }
}

// --- tails: a truncated frame, then close ------------------------------------

function tailFrame(rng: Rng, limits: FuzzLimits): Frame {
  switch (rng.int(0, 2)) {
    case 0: {
      // Half a frame of a length within the limits.
      const length = rng.int(2, Math.min(limits.maxFrameBytes, 65536));
      const wire = concatBytes([lengthHeader(length), rng.bytes(Math.floor(length / 2))]);
      return { kind: "tail_half_frame", wire, expect: "refuse", code: "truncated_frame", malformed: true };
    }
    case 1: {
      // A length near 2^32, some of its bytes, then close.
      const length = 0xffffffff - rng.int(0, 0x20);
      const wire = concatBytes([lengthHeader(length), rng.bytes(rng.pick([0, 1, 16, rng.size(65536)]))]);
      return { kind: "tail_length_near_2^32", wire, expect: "refuse", code: "truncated_frame", malformed: true };
    }
    default:
      return {
        kind: "tail_partial_header",
        wire: rng.bytes(rng.int(1, 3)),
        expect: "refuse",
        code: "truncated_frame",
        malformed: true,
      };
  }
}

// --- raw garbage before the handshake -----------------------------------------

function rawGarbage(rng: Rng, corpus: Corpus): { kind: string; bytes: Uint8Array } {
  const pick = rng.int(0, 8);
  switch (pick) {
    case 0:
      return { kind: "raw_random_bytes", bytes: rng.bytes(rng.int(1, 16) + rng.size(16384)) };
    case 1:
      return { kind: "raw_http", bytes: encoder.encode("GET /api/stats HTTP/1.1\r\nHost: localhost\r\n\r\n") };
    case 2:
      return { kind: "raw_plain_v1_frame", bytes: frameBytes(gz('{"fuzz":"plaintext"}')) };
    case 3:
      return { kind: "raw_plain_v2_hello", bytes: frameBytes(typed(0x01, '{"stream":"plaintext"}')) };
    case 4: {
      // A whole TLS record of random content, of any content type.
      const body = rng.bytes(rng.int(0, 2048));
      const head = new Uint8Array([rng.pick([0x14, 0x15, 0x16, 0x17, 0x18]), 0x03, rng.int(0, 4), 0, 0]);
      new DataView(head.buffer).setUint16(3, body.length);
      return { kind: "raw_tls_record", bytes: concatBytes([head, body]) };
    }
    case 5:
      return { kind: "raw_tls_alert", bytes: new Uint8Array([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, rng.int(0, 255)]) };
    case 6:
      // An SSLv2-style hello.
      return {
        kind: "raw_sslv2_hello",
        bytes: concatBytes([new Uint8Array([0x80, 0x2e, 0x01, 0x00, 0x02]), rng.bytes(43)]),
      };
    default: {
      const hello = corpus.clientHellos.length > 0 ? rng.pick(corpus.clientHellos) : null;
      if (!hello) return { kind: "raw_random_bytes", bytes: rng.bytes(rng.int(1, 512)) };
      return { kind: "client_hello_mutated", bytes: mutateHello(rng, hello) };
    }
  }
}

/** A real ClientHello with bit flips, a cut, a wrong length, an old version, or garbage after it. */
function mutateHello(rng: Rng, hello: Uint8Array): Uint8Array {
  const out = hello.slice();
  switch (rng.int(0, 5)) {
    case 0:
      for (let i = rng.int(1, 8); i > 0; i--) out[rng.int(5, out.length - 1)]! ^= 1 << rng.int(0, 7);
      return out;
    case 1:
      return out.subarray(0, rng.int(1, out.length - 1));
    case 2:
      new DataView(out.buffer).setUint16(3, rng.int(0, 0xffff));
      return out;
    case 3:
      // Handshake length (bytes 6..8) wrong.
      out[6] = rng.int(0, 255);
      out[7] = rng.int(0, 255);
      return out;
    case 4:
      // Client version SSL 3.0 / 2.0 in the hello body.
      out[9] = rng.pick([0x02, 0x03]);
      out[10] = 0x00;
      return out;
    default:
      return concatBytes([out, new Uint8Array([0x17, 0x03, 0x03, 0x00, 0x20]), rng.bytes(32)]);
  }
}

// ---------------------------------------------------------------------------
// A relay that can inject bytes towards the collector mid-session

class InjectRelay {
  readonly #listener: Deno.Listener;
  readonly #pairs = new Map<number, { up: Deno.Conn; down: Deno.Conn }>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;

  constructor(targetHost: string, targetPort: number) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.#accepting = (async () => {
      for await (const down of listener) {
        const task = (async () => {
          let up: Deno.Conn;
          try {
            up = await Deno.connect({
              hostname: targetHost === "localhost" ? "127.0.0.1" : targetHost,
              port: targetPort,
            });
          } catch {
            down.close();
            return;
          }
          const clientPort = (down.remoteAddr as Deno.NetAddr).port;
          this.#pairs.set(clientPort, { up, down });
          const closeBoth = () => {
            for (const c of [up, down]) {
              try {
                c.close();
              } catch {
                // closed
              }
            }
          };
          await Promise.all([pump(down, up).finally(closeBoth), pump(up, down).finally(closeBoth)]);
          this.#pairs.delete(clientPort);
        })();
        this.#tasks.add(task);
        task.finally(() => this.#tasks.delete(task));
      }
    })().catch(() => {});
  }

  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  /** Writes `bytes` to the collector on the connection whose client side uses local port `clientPort`. */
  async inject(clientPort: number, bytes: Uint8Array): Promise<boolean> {
    const pair = this.#pairs.get(clientPort);
    if (!pair) return false;
    try {
      await writeAll(pair.up, bytes);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // closed
    }
    for (const { up, down } of this.#pairs.values()) {
      for (const c of [up, down]) {
        try {
          c.close();
        } catch {
          // closed
        }
      }
    }
    await this.#accepting;
    await Promise.all([...this.#tasks]);
  }
}

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      await writeAll(to, buf.subarray(0, n));
    }
  } catch {
    // either side gone
  }
}

// ---------------------------------------------------------------------------
// The driver

/** Options of {@linkcode runFuzz}. */
export interface FuzzOptions {
  /** Host name to connect to; also the name checked against the certificate. Default "localhost". */
  host?: string;
  port: number;
  /** CA certificate (PEM) that signed the collector's certificate. */
  caCert: string;
  /** Client certificate and key (PEM), for a collector that asks for one. */
  clientCert?: string;
  clientKey?: string;
  /** Connections to open, at least. */
  connections: number;
  /** Malformed inputs to send, at least. */
  inputs: number;
  seed: number;
  /** Stop opening connections, and cut the open ones, after this long. */
  deadlineMs: number;
  /** Connections open at a time. Default 32. */
  parallel?: number;
  /** The collector's limits. Default `serve`'s defaults. */
  limits?: FuzzLimits;
  /** Once `connections` and `inputs` are reached, keep fuzzing while this returns true. */
  keepGoing?: () => boolean;
  /** Most frames on one connection. Default 1500. */
  maxFramesPerConnection?: number;
  /** A connection with no progress (bytes in or out) for this long is cut and counted as stalled. Default 30 s. */
  stallMs?: number;
  /**
   * Weights replacing the default ones, by input kind (`v1_bomb`, `v2_dup_seq` ...) or connection type
   * (`v1`, `v2`, `raw`, `bad_alpn`, `tls_inject`); 0 turns one off. To narrow a problem down to a kind.
   */
  weights?: Record<string, number>;
  /** Progress lines. */
  log?: (message: string) => void;
}

/** Counts of one kind of input. */
export interface KindCount {
  /** Written to a connection (at least partly). */
  sent: number;
  /** Answered (v1/v2 answer matched to it by position). */
  answered: number;
  refusedSeen: number;
  acceptedSeen: number;
  duplicateSeen: number;
  /** Counted as refused by the collector for certain (its answer arrived, or it was witnessed; see FuzzReport). */
  mustRefuse: number;
}

/**
 * What the fuzzer sent and saw.
 *
 * Accounting against the collector's counters (`/api/stats`): a connection the
 * collector closes early cannot have counted the frames it never read, so the
 * fuzzer only claims what it can prove was processed:
 *
 * - Both versions answer every frame (but a valid STATUS) in order, so when the
 *   k-th answer of a connection arrives, the first k answered frames were
 *   processed. Each of those classed `refuse` or `refuse_entries` must have
 *   added at least 1 to `frames_rejected + entries_rejected`: `mustRefuse`
 *   counts them (by what was sent, whatever the answer said).
 * - A truncated tail is written only once every answer arrived; it is proven
 *   read when the collector, after our close_notify/FIN, closes its side too
 *   (it reads in order, so the partial frame came before the end): then
 *   `truncated_frame` must count it.
 * - A TLS handshake the collector refused is proven when our handshake failed
 *   with its alert (bad ALPN), or when it answered garbage with bytes (an
 *   alert) or closed on us first: `tls_handshake` must count it.
 *
 * `observed` counts the refusals the answers themselves reported (v1 errors,
 * v2 NACKs by code, the `rejected` items of ACKs), which the counters must
 * also cover, code by code for v2. `upperBound` is everything the fuzzer
 * wrote that could be refused (frames, lines in batches, connections): the
 * counters may not exceed it (the well-behaved client sends nothing refusable).
 */
export interface FuzzReport {
  /** Malformed inputs written (frames, tails, raw garbage, bad handshakes). */
  inputs: number;
  /** Valid frames mixed in (HELLO, PING, small batches, STATUS, entries near the limit). */
  validFrames: number;
  /** Frames written, valid or not. */
  frames: number;
  bytes: number;
  connections: {
    total: number;
    byType: Record<string, number>;
    /** TLS connections whose every answer arrived. */
    complete: number;
    /** Connections the collector closed before we were done (its right). */
    closedByServer: number;
    connectFailed: number;
    stalled: number;
    cutByDeadline: number;
  };
  kinds: Record<string, KindCount>;
  answers: number;
  mustRefuse: number;
  /** Of mustRefuse: truncated tails and refused handshakes. */
  mustTruncated: number;
  mustTls: number;
  observed: {
    frameRefusals: number;
    entryRefusals: number;
    /** v2 NACK codes and ACK `rejected` codes. */
    v2ByCode: Record<string, number>;
    /** v1 error answers, classified by their message. */
    v1ByReason: Record<string, number>;
  };
  upperBound: number;
  /** Fuzz-tagged entries the fuzzer sent that the collector may store. */
  mayStore: number;
  /** Answers that break the protocol, with examples. */
  violations: { total: number; byType: Record<string, number>; examples: string[] };
  /** Answers other than expected, that the protocol allows or that limits may explain. */
  surprises: { total: number; byType: Record<string, number>; examples: string[] };
  durationMs: number;
  deadlineHit: boolean;
  seed: number;
}

type ConnType = "v1" | "v2" | "raw" | "bad_alpn" | "tls_inject";

const CONN_TYPES: readonly (readonly [ConnType, number])[] = [
  ["v1", 36],
  ["v2", 46],
  ["raw", 12],
  ["bad_alpn", 2],
  ["tls_inject", 4],
];

/** Shared state of one fuzz run. */
class FuzzRun {
  readonly report: FuzzReport;
  readonly limits: FuzzLimits;
  readonly corpus: Corpus;
  readonly host: string;
  readonly started = performance.now();
  readonly open = new Set<Deno.Conn>();
  relay: InjectRelay | null = null;
  readonly v1Kinds: readonly (readonly [string, number])[];
  readonly v2Kinds: readonly (readonly [string, number])[];
  readonly v2PreHelloKinds: readonly (readonly [string, number])[];
  readonly connTypes: readonly (readonly [ConnType, number])[];
  planned = 0;
  opened = 0;
  stopping = false;

  constructor(readonly o: FuzzOptions, readonly rng: Rng) {
    this.limits = o.limits ?? SERVE_DEFAULT_LIMITS;
    this.corpus = new Corpus(this.limits, rng.fork());
    this.host = o.host ?? "localhost";
    const w = o.weights ?? {};
    const table = <T extends string>(t: readonly (readonly [T, number])[]) => {
      const out = t.map(([k, v]) => [k, w[k] ?? v] as const);
      // A table with nothing left keeps its valid kinds (a connection must be able to go on).
      return out.some(([, v]) => v > 0) ? out : t;
    };
    this.v1Kinds = table(V1_KINDS);
    this.v2Kinds = table(V2_KINDS);
    this.v2PreHelloKinds = table(V2_PRE_HELLO_KINDS);
    this.connTypes = table(CONN_TYPES);
    this.report = {
      inputs: 0,
      validFrames: 0,
      frames: 0,
      bytes: 0,
      connections: {
        total: 0,
        byType: {},
        complete: 0,
        closedByServer: 0,
        connectFailed: 0,
        stalled: 0,
        cutByDeadline: 0,
      },
      kinds: {},
      answers: 0,
      mustRefuse: 0,
      mustTruncated: 0,
      mustTls: 0,
      observed: { frameRefusals: 0, entryRefusals: 0, v2ByCode: {}, v1ByReason: {} },
      upperBound: 0,
      mayStore: 0,
      violations: { total: 0, byType: {}, examples: [] },
      surprises: { total: 0, byType: {}, examples: [] },
      durationMs: 0,
      deadlineHit: false,
      seed: o.seed,
    };
  }

  kind(name: string): KindCount {
    return this.report.kinds[name] ??= {
      sent: 0,
      answered: 0,
      refusedSeen: 0,
      acceptedSeen: 0,
      duplicateSeen: 0,
      mustRefuse: 0,
    };
  }

  /** Records a frame (or raw input) as written. */
  sent(f: { kind: string; malformed: boolean; wire?: Uint8Array; lines?: number; mayStore?: number }, bytes: number) {
    this.kind(f.kind).sent++;
    if (f.malformed) this.report.inputs++;
    else this.report.validFrames++;
    this.report.frames++;
    this.report.bytes += bytes;
    this.report.upperBound += 1 + (f.lines ?? 0);
    this.report.mayStore += f.mayStore ?? 0;
  }

  must(kind: string, what: "frame" | "truncated" | "tls"): void {
    this.report.mustRefuse++;
    this.kind(kind).mustRefuse++;
    if (what === "truncated") this.report.mustTruncated++;
    if (what === "tls") this.report.mustTls++;
  }

  violation(type: string, example: string): void {
    note(this.report.violations, type, example);
  }

  surprise(type: string, example: string): void {
    note(this.report.surprises, type, example);
  }

  get elapsed(): number {
    return performance.now() - this.started;
  }

  get pastDeadline(): boolean {
    return this.elapsed > this.o.deadlineMs;
  }

  /** Whether to open another connection. */
  wantMore(): boolean {
    if (this.stopping || this.pastDeadline) return false;
    if (this.planned < this.o.inputs || this.opened < this.o.connections) return true;
    return this.o.keepGoing?.() ?? false;
  }

  track(conn: Deno.Conn): void {
    this.open.add(conn);
  }

  untrack(conn: Deno.Conn): void {
    this.open.delete(conn);
  }
}

function note(bucket: { total: number; byType: Record<string, number>; examples: string[] }, type: string, ex: string) {
  bucket.total++;
  bucket.byType[type] = (bucket.byType[type] ?? 0) + 1;
  if (bucket.examples.length < 20) bucket.examples.push(`${type}: ${ex}`);
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** Classifies a v1 error message by the refusal code the docs give for it. */
function v1Reason(error: string): string {
  if (/not valid gzip/.test(error)) return "bad_gzip";
  if (/decompressed size exceeds/.test(error)) return "decompressed_too_large";
  if (/exceeds max-frame-bytes/.test(error)) return "frame_too_large";
  if (/exceeds max-entry-bytes/.test(error)) return "entry_too_large";
  if (/^entry is /.test(error)) return "invalid_entry";
  return "other";
}

/** Parses answers `[u32 length][payload]` as they arrive. */
class AnswerParser {
  #buf: Uint8Array = new Uint8Array(0);
  push(chunk: Uint8Array): Uint8Array[] {
    this.#buf = this.#buf.length === 0 ? chunk.slice() : concatBytes([this.#buf, chunk]);
    const out: Uint8Array[] = [];
    let at = 0;
    while (this.#buf.length - at >= 4) {
      const length = new DataView(this.#buf.buffer, this.#buf.byteOffset + at).getUint32(0);
      if (length > 16 << 20) throw new Error(`answer of ${length} bytes`);
      if (this.#buf.length - at - 4 < length) break;
      out.push(this.#buf.slice(at + 4, at + 4 + length));
      at += 4 + length;
    }
    this.#buf = this.#buf.slice(at);
    return out;
  }
  get idle(): boolean {
    return this.#buf.length === 0;
  }
}

/** Wakes waiters; each wait ends at a notify or after its timeout. */
class Signal {
  #waiters: (() => void)[] = [];
  notify(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#waiters.push(done);
    });
  }
}

/** What an answer says happened to the frame it answers. */
type Outcome =
  | { type: "refused"; code: string; entries: 0 }
  | { type: "accepted"; rejected: { code: string }[]; stored: number }
  | { type: "duplicate"; stored: number }
  | { type: "other"; what: string };

function readV2Answer(payload: Uint8Array): Outcome {
  const type = payload[0];
  const json = () => JSON.parse(decoder.decode(payload.subarray(1)));
  try {
    switch (type) {
      case 0x81:
        return { type: "accepted", rejected: [], stored: 0 };
      case 0x84:
        return payload.length === 5 ? { type: "accepted", rejected: [], stored: 0 } : { type: "other", what: "PONG" };
      case 0x83: {
        const nack = json();
        return { type: "refused", code: String(nack.code), entries: 0 };
      }
      case 0x82: {
        const ack = json();
        if (ack.duplicate === true) return { type: "duplicate", stored: Number(ack.stored) };
        const rejected = Array.isArray(ack.rejected) ? ack.rejected as { code: string }[] : [];
        return { type: "accepted", rejected, stored: Number(ack.stored) };
      }
      default:
        return { type: "other", what: `type 0x${(type ?? 0).toString(16)}` };
    }
  } catch (err) {
    return { type: "other", what: `unreadable answer: ${(err as Error).message}` };
  }
}

function readV1Answer(payload: Uint8Array): Outcome {
  try {
    const a = JSON.parse(decoder.decode(payload));
    if (a.status === "ok") return { type: "accepted", rejected: [], stored: 1 };
    if (a.status === "error") return { type: "refused", code: v1Reason(String(a.error)), entries: 0 };
    return { type: "other", what: decoder.decode(payload).slice(0, 80) };
  } catch {
    return { type: "other", what: `unreadable v1 answer ${decoder.decode(payload).slice(0, 80)}` };
  }
}

/** Frames a connection writes: `n` malformed inputs with valid frames mixed in. */
function* framesOf(run: FuzzRun, rng: Rng, type: "v1" | "v2", n: number, state: V2State): Generator<Frame> {
  let malformed = 0;
  let total = 0;
  const max = run.o.maxFramesPerConnection ?? 1500;
  // Some v2 connections say HELLO at once; the others send a few frames before it.
  if (type === "v2" && rng.chance(0.75)) yield helloFrame(state);
  let preHello = type === "v2" && !state.helloSent ? rng.int(1, 5) : 0;
  while (malformed < n && total < max) {
    let f: Frame;
    if (type === "v1") f = v1Frame(rng, run.corpus, run.v1Kinds);
    else if (!state.helloSent && preHello-- <= 0) f = helloFrame(state);
    else f = v2Frame(rng, run.corpus, state, run.v2Kinds, run.v2PreHelloKinds);
    if (f.malformed) malformed++;
    total++;
    yield f;
  }
}

interface Pending {
  frame: Omit<Frame, "wire">;
}

/** One TLS connection speaking v1 or v2. */
async function tlsConnection(run: FuzzRun, rng: Rng, type: "v1" | "v2", n: number, id: number): Promise<void> {
  const o = run.o;
  let conn: Deno.TlsConn;
  try {
    conn = await Deno.connectTls({
      hostname: run.host,
      port: o.port,
      caCerts: [o.caCert],
      alpnProtocols: type === "v2" ? [ALPN_V2] : undefined,
      ...(o.clientCert && o.clientKey ? { cert: o.clientCert, key: o.clientKey } : {}),
    });
  } catch (err) {
    run.report.connections.connectFailed++;
    run.surprise("connect_failed", (err as Error).message);
    return;
  }
  run.track(conn);
  const signal = new Signal();
  let lastProgress = performance.now();
  let serverClosed = false;
  let stalled = false;
  const expected: Pending[] = [];
  let answered = 0;
  /** Highest seq the collector ACKed (not as duplicate) on this connection. */
  let ackedSeq = 0;
  const watchdog = setInterval(() => {
    if (performance.now() - lastProgress > (o.stallMs ?? 30_000) || run.stopping) {
      if (!run.stopping) stalled = true;
      closeQuietly(conn);
      signal.notify();
    }
  }, 250);
  try {
    try {
      const hs = await conn.handshake();
      if (type === "v2" && hs.alpnProtocol !== ALPN_V2) {
        run.violation("alpn", `offered ${ALPN_V2}, collector chose ${hs.alpnProtocol}`);
      }
    } catch (err) {
      run.report.connections.connectFailed++;
      run.surprise("handshake_failed", (err as Error).message);
      return;
    }
    const onAnswer = (payload: Uint8Array) => {
      run.report.answers++;
      const pending = expected[answered++];
      if (!pending) {
        run.violation("extra_answer", `conn ${id}: answer ${answered} but only ${expected.length} frames answerable`);
        return;
      }
      const f = pending.frame;
      const kc = run.kind(f.kind);
      kc.answered++;
      const outcome = type === "v1" ? readV1Answer(payload) : readV2Answer(payload);
      // Whether this connection's own ACKs prove that the collector accepted f.seq before.
      const acceptedBefore = f.seq !== undefined && f.seq <= ackedSeq;
      // The frame was processed: if it must be refused, the counters must show it.
      if (f.expect === "refuse" || f.expect === "refuse_entries") run.must(f.kind, "frame");
      const obs = run.report.observed;
      switch (outcome.type) {
        case "refused":
          kc.refusedSeen++;
          obs.frameRefusals++;
          if (type === "v2") obs.v2ByCode[outcome.code] = (obs.v2ByCode[outcome.code] ?? 0) + 1;
          else obs.v1ByReason[outcome.code] = (obs.v1ByReason[outcome.code] ?? 0) + 1;
          if (f.expect === "accept") run.surprise(`refused_valid:${f.kind}`, `code ${outcome.code}`);
          if (f.expect === "duplicate") {
            if (acceptedBefore) {
              run.violation(`duplicate_refused:${f.kind}`, `seq ${f.seq} (acked ${ackedSeq}) refused: ${outcome.code}`);
            } else run.surprise(`duplicate_refused:${f.kind}`, `seq ${f.seq}: ${outcome.code}`);
          }
          if (f.code && outcome.code !== f.code && f.expect !== "accept") {
            run.surprise(`code:${f.kind}`, `expected ${f.code}, got ${outcome.code}`);
          }
          break;
        case "accepted": {
          for (const r of outcome.rejected) {
            obs.entryRefusals++;
            const code = String(r.code ?? "none");
            obs.v2ByCode[code] = (obs.v2ByCode[code] ?? 0) + 1;
          }
          if (outcome.rejected.length > 0) kc.refusedSeen++;
          else kc.acceptedSeen++;
          if (f.seq !== undefined) ackedSeq = Math.max(ackedSeq, f.seq);
          if (f.expect === "refuse" || (f.expect === "refuse_entries" && outcome.rejected.length === 0)) {
            run.violation(
              `accepted_must_refuse:${f.kind}`,
              `expected ${f.code ?? "a refusal"}, stored ${outcome.stored}`,
            );
          }
          if (f.expect === "duplicate") {
            if (acceptedBefore && outcome.stored > 0) {
              run.violation(`duplicate_stored:${f.kind}`, `seq ${f.seq} stored ${outcome.stored} again`);
            } else run.surprise(`duplicate_not_seen:${f.kind}`, `seq ${f.seq} answered as new`);
          }
          break;
        }
        case "duplicate":
          kc.duplicateSeen++;
          if (outcome.stored !== 0) {
            run.violation(`duplicate_stored:${f.kind}`, `duplicate ACK with stored ${outcome.stored}`);
          }
          if (f.expect === "refuse" || f.expect === "refuse_entries") {
            run.violation(`duplicate_for_refusal:${f.kind}`, `seq ${f.seq} expected ${f.code}, got a duplicate ACK`);
          }
          break;
        case "other":
          run.violation(`bad_answer:${f.kind}`, outcome.what);
      }
    };
    const parser = new AnswerParser();
    const reader = (async () => {
      const buf = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const got = await conn.read(buf);
          if (got === null) break;
          lastProgress = performance.now();
          for (const p of parser.push(buf.subarray(0, got))) onAnswer(p);
          signal.notify();
        }
      } catch {
        // reset by the collector, or closed by us
      }
      serverClosed = true;
      signal.notify();
    })();

    // Write the frames, a few at a time (pipelining), while the answers are read.
    const state: V2State = {
      stream: `fuzz-${o.seed}-${id}-${rng.u32()}`,
      helloSent: false,
      maxSent: 0,
      claimed: 0,
      seq: 1,
    };
    let chunk: Uint8Array[] = [];
    let chunkFrames: Frame[] = [];
    let chunkBytes = 0;
    let writeFailed = false;
    const flush = async () => {
      if (chunk.length === 0) return;
      const bytes = concatBytes(chunk);
      const frames = chunkFrames;
      chunk = [];
      chunkFrames = [];
      chunkBytes = 0;
      for (const f of frames) {
        const { wire: _wire, ...meta } = f;
        if (f.expect !== "silent") expected.push({ frame: meta });
        run.sent(f, f.wire.length);
      }
      try {
        await writeAll(conn, bytes);
        lastProgress = performance.now();
      } catch {
        writeFailed = true;
      }
    };
    for (const f of framesOf(run, rng, type, n, state)) {
      chunk.push(f.wire);
      chunkFrames.push(f);
      chunkBytes += f.wire.length;
      if (chunkBytes >= 32 * 1024 || chunkFrames.length >= 64) await flush();
      if (writeFailed || serverClosed || stalled || run.stopping) break;
    }
    if (!writeFailed && !serverClosed && !stalled) await flush();

    // Wait for every answer (or the collector's close, or a stall).
    while (answered < expected.length && !serverClosed && !stalled && !run.stopping) await signal.wait(1000);
    const complete = answered >= expected.length && !stalled;
    if (complete) run.report.connections.complete++;
    else if (stalled) {
      run.report.connections.stalled++;
      run.violation(
        "stalled",
        `conn ${id} (${type}): ${answered}/${expected.length} answers, no progress for ${
          (o.stallMs ?? 30_000) / 1000
        } s`,
      );
    } else if (run.stopping) run.report.connections.cutByDeadline++;
    else run.report.connections.closedByServer++;

    // A truncated frame, then close: only once everything was answered, so that it is the last thing read.
    let tail: Frame | null = null;
    if (complete && !serverClosed && rng.chance(0.3)) {
      tail = tailFrame(rng, run.limits);
      try {
        await writeAll(conn, tail.wire);
        run.sent(tail, tail.wire.length);
      } catch {
        tail = null;
      }
    }
    // Close our side (close_notify + FIN) and wait for the collector to close its side: then it has
    // read everything, the tail included.
    if (!serverClosed && !stalled && !run.stopping) {
      try {
        await conn.closeWrite();
        const until = performance.now() + 10_000;
        while (!serverClosed && performance.now() < until && !run.stopping) await signal.wait(500);
        if (!serverClosed && !run.stopping) {
          run.surprise("no_close_after_fin", `conn ${id} (${type}) still open 10 s after our close`);
        }
      } catch {
        // already gone
      }
    }
    if (tail && serverClosed && complete && parser.idle) run.must(tail.kind, "truncated");
    closeQuietly(conn);
    await reader;
  } finally {
    clearInterval(watchdog);
    run.untrack(conn);
    closeQuietly(conn);
  }
}

/** Garbage on plain TCP, or a mutated ClientHello, before any handshake. */
async function rawConnection(run: FuzzRun, rng: Rng): Promise<void> {
  const { kind, bytes } = rawGarbage(rng, run.corpus);
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ hostname: run.host === "localhost" ? "127.0.0.1" : run.host, port: run.o.port });
  } catch (err) {
    run.report.connections.connectFailed++;
    run.surprise("connect_failed", (err as Error).message);
    return;
  }
  run.track(conn);
  try {
    run.sent({ kind, malformed: true }, bytes.length);
    let answered = false;
    try {
      await writeAll(conn, bytes);
      // The collector answers garbage with an alert and closes; a cut record leaves it waiting for more.
      answered = (await readUntilClose(conn, 1500)).closed;
    } catch {
      answered = true; // reset while writing: it refused first
    }
    if (answered) {
      run.report.connections.closedByServer++;
      run.must(kind, "tls");
    }
  } finally {
    run.untrack(conn);
    closeQuietly(conn);
  }
}

/** Reads and discards until the peer closes (EOF or reset) or `ms` pass. */
async function readUntilClose(conn: Deno.Conn, ms: number): Promise<{ bytes: number; closed: boolean }> {
  const deadline = performance.now() + ms;
  const buf = new Uint8Array(16 * 1024);
  let bytes = 0;
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0) return { bytes, closed: false };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      conn.read(buf).catch(() => null),
      new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), left)),
    ]);
    clearTimeout(timer);
    if (r === "timeout") return { bytes, closed: false };
    if (r === null) return { bytes, closed: true };
    bytes += r;
  }
}

/** A TLS client offering only protocols the collector does not speak: refused in the handshake. */
async function badAlpnConnection(run: FuzzRun, rng: Rng): Promise<void> {
  const kind = "tls_bad_alpn";
  run.sent({ kind, malformed: true }, 0);
  let conn: Deno.TlsConn | null = null;
  try {
    conn = await Deno.connectTls({
      hostname: run.host,
      port: run.o.port,
      caCerts: [run.o.caCert],
      alpnProtocols: rng.pick([["h2"], ["http/1.1"], ["tlslog/1", "tlslog/3"], ["x".repeat(200)]]),
    });
    run.track(conn);
    await conn.handshake();
    run.violation("bad_alpn_accepted", "handshake succeeded with no common ALPN protocol");
  } catch {
    // The collector's alert: refused, and counted as tls_handshake.
    run.must(kind, "tls");
  } finally {
    if (conn) {
      run.untrack(conn);
      closeQuietly(conn);
    }
  }
}

/** A TLS session through the relay: a valid exchange, then garbage TLS records injected towards the collector. */
async function injectConnection(run: FuzzRun, rng: Rng): Promise<void> {
  const relay = run.relay!;
  const v2 = rng.chance(0.5);
  const kind = "tls_inject_garbage_records";
  let conn: Deno.TlsConn;
  try {
    conn = await Deno.connectTls({
      hostname: run.host,
      port: relay.port,
      caCerts: [run.o.caCert],
      alpnProtocols: v2 ? [ALPN_V2] : undefined,
    });
  } catch (err) {
    run.report.connections.connectFailed++;
    run.surprise("connect_failed", (err as Error).message);
    return;
  }
  run.track(conn);
  try {
    await conn.handshake();
    const valid = v2 ? frameBytes(pingPayload(rng.u32())) : frameBytes(gz(fuzzLine(rng, "v1_before_inject")));
    run.sent({ kind: v2 ? "v2_ping" : "v1_valid", malformed: false, mayStore: v2 ? 0 : 1 }, valid.length);
    await writeAll(conn, valid);
    const answer = await readAtLeast(conn, 4, 10_000);
    if (answer.length < 4) run.surprise("inject_no_answer", "no answer to the valid frame before the injection");
    if (rng.chance(0.3)) await writeAll(conn, lengthHeader(rng.int(10, 1000))); // mid-frame
    const body = rng.bytes(rng.int(1, 512));
    const record = (type: number, length: number) => {
      const head = new Uint8Array([type, 0x03, 0x03, 0, 0]);
      new DataView(head.buffer).setUint16(3, length);
      return concatBytes([head, body]);
    };
    const garbage = rng.pick([
      () => record(0x17, body.length), // application data that fails to decrypt
      () => record(0x17, 0xffff), // a record longer than allowed, cut
      () => record(0x16, body.length), // a handshake message mid-session
      () => body,
      () => new Uint8Array([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a]),
      () => new Uint8Array([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]),
      () => run.corpus.clientHellos[0] ?? body,
    ])();
    run.sent({ kind, malformed: true }, garbage.length);
    await relay.inject(conn.localAddr.port, garbage);
    // The collector must drop the session; wait for it to close.
    const { closed } = await readUntilClose(conn, 5000);
    if (closed) run.report.connections.closedByServer++;
    else run.surprise("inject_not_closed", "collector kept a session after garbage records");
  } catch (err) {
    run.surprise("inject_error", (err as Error).message);
  } finally {
    run.untrack(conn);
    closeQuietly(conn);
  }
}

/** A running fuzz: live counters, and the final report. */
export interface FuzzHandle {
  /** Live counters (final once `done` settles). */
  readonly report: FuzzReport;
  /** Settles when every connection is done. */
  readonly done: Promise<FuzzReport>;
  /** Stops opening connections and cuts the open ones. */
  stop(): void;
}

/** Starts a fuzz run; see {@linkcode runFuzz}. */
export function startFuzz(o: FuzzOptions): FuzzHandle {
  const rng = new Rng(o.seed);
  const run = new FuzzRun(o, rng);
  const parallel = o.parallel ?? 32;
  const log = o.log ?? (() => {});
  const done = (async () => {
    await run.corpus.captureClientHellos(o.caCert).catch((err) => log(`no ClientHello captured: ${err.message}`));
    run.relay = new InjectRelay(run.host, o.port);
    let nextId = 0;
    let lastLog = 0;
    const deadlineTimer = setInterval(() => {
      if (run.pastDeadline && !run.stopping) {
        run.report.deadlineHit = true;
        run.stopping = true;
        for (const c of run.open) closeQuietly(c);
      }
      if (performance.now() - lastLog > 5000) {
        lastLog = performance.now();
        log(
          `fuzz: ${run.report.inputs} inputs, ${run.report.frames} frames, ${run.report.connections.total} connections`,
        );
      }
    }, 200);
    const worker = async () => {
      const wrng = rng.fork();
      while (run.wantMore()) {
        const id = nextId++;
        run.opened++;
        run.report.connections.total++;
        const type = wrng.weighted(run.connTypes);
        run.report.connections.byType[type] = (run.report.connections.byType[type] ?? 0) + 1;
        const crng = wrng.fork();
        if (type === "v1" || type === "v2") {
          // Inputs for this connection: the remaining ones spread over the remaining connections, varied.
          const leftInputs = Math.max(0, o.inputs - run.planned);
          const leftConns = Math.max(1, o.connections - run.opened + 1);
          const mean = leftInputs > 0 ? Math.max(1, leftInputs / leftConns) : 100;
          const n = Math.max(
            1,
            Math.min(o.maxFramesPerConnection ?? 1500, Math.round(mean * wrng.pick([0.02, 0.3, 1, 1, 1.4, 2.2]))),
          );
          run.planned += n;
          await tlsConnection(run, crng, type, n, id);
        } else {
          run.planned++;
          if (type === "raw") await rawConnection(run, crng);
          else if (type === "bad_alpn") await badAlpnConnection(run, crng);
          else await injectConnection(run, crng);
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: parallel }, () => worker()));
    } finally {
      clearInterval(deadlineTimer);
      await run.relay.close();
    }
    run.report.durationMs = run.elapsed;
    return run.report;
  })();
  return {
    report: run.report,
    done,
    stop() {
      run.stopping = true;
      for (const c of run.open) closeQuietly(c);
    },
  };
}

/** Runs the fuzzer to its end: at least `inputs` malformed inputs over at least `connections` connections. */
export function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  return startFuzz(o).done;
}

// ---------------------------------------------------------------------------
// The campaign: serve + fuzzer + well-behaved sender + probes + checks

/** Options of {@linkcode runCampaign}. */
export interface CampaignOptions {
  /** Malformed inputs, at least. */
  inputs: number;
  /** Fuzz connections, at least. */
  connections: number;
  /** Entries the well-behaved client sends. */
  entries: number;
  seed: number;
  /** Fuzz connections open at a time. Default 32. */
  parallel?: number;
  /** `tlslog send` runs the entries are split into, started as the fuzz progresses. Default 4. */
  sends?: number;
  /** Limits given to serve. Default 256 KiB frames, 1 MiB batches, 64 KiB entries. */
  limits?: FuzzLimits;
  /** Peak RSS allowed, in bytes. Default 256 MiB. */
  rssLimitBytes?: number;
  /** Stop the fuzz early when serve's RSS passes this (protects the machine). Default 4 GiB. */
  rssAbortBytes?: number;
  /** Input-kind weights for the fuzzer (see {@linkcode FuzzOptions.weights}). */
  weights?: Record<string, number>;
  /** The fuzzer's deadline. */
  deadlineMs: number;
  /** Progress. */
  log?: (message: string) => void;
}

/** One pass/fail condition. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** Everything the campaign measured. */
export interface CampaignReport {
  fuzz: FuzzReport;
  limits: FuzzLimits;
  durationMs: number;
  /** Largest VmHWM/VmRSS of the serve process, KiB. */
  peakRssKb: number;
  rssSamples: number;
  /** serve's VmRSS once a second: [seconds since serve started, KiB]. */
  rssTimeline: [number, number][];
  /** The collector's own view of its memory at the end (`/api/stats` `memory`), if it has one. */
  collectorMemory: Record<string, unknown> | null;
  probes: { sent: number; ok: number; failed: number; maxMs: number; failures: string[] };
  serveAlive: boolean;
  serveExit: { code: number; signal: string | null } | null;
  good: {
    entries: number;
    sends: { code: number; stderr: string }[];
    delivery: DeliveryReport;
    fuzzStored: number;
    nonJsonLines: number;
    nonJsonExamples: string[];
  };
  stats: Record<string, unknown> | null;
  checks: Check[];
  /** Failed checks, one line each. */
  failures: string[];
  /** Protocol oddities found that are not among the Done-when conditions. */
  findings: string[];
  serveStderr: { lines: number; distinct: string[]; tail: string };
}

/** Campaign limits: small enough that bombs and huge entries are cheap, so that 100,000 inputs run quickly. */
export const CAMPAIGN_LIMITS: FuzzLimits = {
  maxFrameBytes: 256 * 1024,
  maxBatchBytes: 1 << 20,
  maxEntryBytes: 64 * 1024,
};

/** `{"id":i,"data":"<hex>"}` for ids [from, to), one per line. */
async function writeGoodEntries(path: string, from: number, to: number, rng: Rng): Promise<void> {
  const hex = "0123456789abcdef";
  const lines: string[] = [];
  for (let id = from; id < to; id++) {
    let data = "";
    for (let i = 0; i < 48; i++) data += hex[rng.int(0, 15)];
    lines.push(JSON.stringify({ id, data }));
  }
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
}

/** Reads every stored line: the good entries' ids, fuzz entries counted, lines that are not JSON objects kept aside. */
async function readStoredLines(dataDir: string): Promise<{ ids: unknown[]; fuzz: number; nonJson: string[] }> {
  const ids: unknown[] = [];
  const nonJson: string[] = [];
  let fuzz = 0;
  // ignoreBOM: a BOM stored at the start of a line must show, not be dropped by the decoder.
  const dec = new TextDecoder("utf-8", { ignoreBOM: true });
  for (const name of await listDataFiles(dataDir)) {
    const text = dec.decode(await readStoreFile(dataDir, name));
    for (const line of text.split("\n")) {
      if (!line) continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        nonJson.push(`${name}: ${JSON.stringify(line.slice(0, 60))}`);
        continue;
      }
      if (typeof v !== "object" || v === null || Array.isArray(v)) {
        nonJson.push(`${name}: ${JSON.stringify(line.slice(0, 60))}`);
        continue;
      }
      const e = v as Record<string, unknown>;
      if ("fuzz" in e) fuzz++;
      else ids.push(e.id);
    }
  }
  return { ids, fuzz, nonJson };
}

/** Peak memory of a process from /proc (VmHWM is the kernel's own high-water mark). */
class RssWatch {
  kb = 0;
  samples = 0;
  /** VmRSS once a second: [seconds since start, KiB]. */
  readonly timeline: [number, number][] = [];
  readonly #started = performance.now();
  readonly #timer: ReturnType<typeof setInterval>;
  constructor(readonly pid: number) {
    this.poll();
    this.#timer = setInterval(() => this.poll(), 100);
  }
  poll(): void {
    try {
      const status = Deno.readTextFileSync(`/proc/${this.pid}/status`);
      for (const m of status.matchAll(/^(?:VmHWM|VmRSS):\s+(\d+) kB$/gm)) this.kb = Math.max(this.kb, Number(m[1]));
      this.samples++;
      const t = (performance.now() - this.#started) / 1000;
      const last = this.timeline[this.timeline.length - 1];
      if (!last || t - last[0] >= 1) {
        this.timeline.push([t, Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 0)]);
      }
    } catch {
      // exited
    }
  }
  stop(): void {
    this.poll();
    clearInterval(this.#timer);
  }
}

/** A v2 PING on a fresh connection; resolves to the round trip in ms or throws. */
async function pingOnce(host: string, port: number, caCert: string, timeoutMs: number): Promise<number> {
  const started = performance.now();
  let conn: Deno.TlsConn | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const work = (async () => {
    conn = await Deno.connectTls({ hostname: host, port, caCerts: [caCert], alpnProtocols: [ALPN_V2] });
    const nonce = (Math.random() * 0xffffffff) >>> 0;
    await writeAll(conn, frameBytes(pingPayload(nonce)));
    const got = await readAtLeast(conn, 9, timeoutMs);
    const expected = frameBytes(concatBytes([new Uint8Array([0x84]), pingPayload(nonce).subarray(1)]));
    if (got.length < 9 || !expected.every((b, i) => got[i] === b)) {
      throw new Error(`no PONG (got ${got.length} bytes)`);
    }
    return performance.now() - started;
  })();
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error(`no PONG in ${timeoutMs} ms`)), timeoutMs)
      ),
    ]);
  } finally {
    clearTimeout(timer);
    if (conn) closeQuietly(conn);
    await work.catch(() => {});
  }
}

async function fetchStats(url: string, token: string | null, timeoutMs: number): Promise<Record<string, unknown>> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const res = await fetch(new URL("api/stats", url), {
    headers,
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`/api/stats: HTTP ${res.status}`);
  }
  return await res.json();
}

/** Which flags `serve --help` lists (the dashboard may soon need a token). */
async function serveFlags(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(new URL("..", import.meta.url).pathname, "main.ts"), "serve", "--help"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return decoder.decode(out.stdout) + decoder.decode(out.stderr);
}

function num(stats: Record<string, unknown> | null, key: string): number {
  const v = stats?.[key];
  return typeof v === "number" ? v : 0;
}

function reason(stats: Record<string, unknown> | null, code: string): number {
  const r = stats?.rejected_by_reason as Record<string, number> | undefined;
  return r?.[code] ?? 0;
}

/**
 * Runs `tlslog serve`, the fuzzer against it, and meanwhile `tlslog send` of
 * `entries` numbered entries (in `sends` runs started as the fuzz
 * progresses; the fuzz goes on until the last one is done); probes the
 * collector every second (a v2 PING on a new connection and /api/stats);
 * samples its RSS; then stops it with SIGTERM and checks the Done-when
 * conditions. Never throws for a failed condition: see `failures`.
 */
export async function runCampaign(o: CampaignOptions): Promise<CampaignReport> {
  const log = o.log ?? (() => {});
  const limits = o.limits ?? CAMPAIGN_LIMITS;
  const rssLimitKb = (o.rssLimitBytes ?? 256 * 1024 * 1024) / 1024;
  const certs = await testCerts();
  const dir = await Deno.makeTempDir({ prefix: "tlslog-fuzz-" });
  const dataDir = join(dir, "data");
  const help = await serveFlags();
  const token = /--dashboard-token\b/.test(help) ? crypto.randomUUID().replaceAll("-", "") : null;
  const dashboardPort = freePort();
  const args = [
    "--data-dir",
    dataDir,
    "--rotate-entries",
    "20000",
    "--dashboard-port",
    String(dashboardPort),
    "--max-frame-bytes",
    String(limits.maxFrameBytes),
    "--max-batch-bytes",
    String(limits.maxBatchBytes),
    "--max-entry-bytes",
    String(limits.maxEntryBytes),
    ...(token ? ["--dashboard-token", token] : []),
  ];
  const started = performance.now();
  let server: ServeProcess | null = null;
  const checks: Check[] = [];
  const findings: string[] = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  try {
    server = await spawnServe(args);
    const serve = server;
    const url = serve.dashboardUrl ?? `http://127.0.0.1:${dashboardPort}/`;
    log(`serve pid ${serve.child.pid} on port ${serve.port}, dashboard ${url}${token ? " (token)" : ""}`);
    let exitedEarly = false;
    serve.child.status.then(() => exitedEarly = true);
    const rss = new RssWatch(serve.child.pid);

    // Probes: every second a PING on a new v2 connection and a GET of /api/stats.
    const probes = { sent: 0, ok: 0, failed: 0, maxMs: 0, failures: [] as string[] };
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const t0 = performance.now();
        probes.sent++;
        try {
          const ms = await pingOnce("localhost", serve.port, certs.ca, 10_000);
          await fetchStats(url, token, 10_000);
          probes.ok++;
          probes.maxMs = Math.max(probes.maxMs, ms, performance.now() - t0);
        } catch (err) {
          probes.failed++;
          if (probes.failures.length < 10) {
            probes.failures.push(`${((performance.now() - started) / 1000).toFixed(1)} s: ${(err as Error).message}`);
          }
        }
        const wait = 1000 - (performance.now() - t0);
        if (wait > 0 && probing) await sleep(wait);
      }
    })();

    // The well-behaved client: `sends` runs of tlslog send, each started once the fuzz has sent its share.
    const sendsN = Math.max(1, Math.min(o.sends ?? 4, o.entries));
    const sendResults: { code: number; stderr: string }[] = [];
    let goodDone = false;
    const fuzz = startFuzz({
      host: "localhost",
      port: serve.port,
      caCert: certs.ca,
      connections: o.connections,
      inputs: o.inputs,
      seed: o.seed,
      deadlineMs: o.deadlineMs,
      parallel: o.parallel,
      limits,
      keepGoing: () => !goodDone,
      weights: o.weights,
      log,
    });
    let rssAborted = false;
    const rssGuard = setInterval(() => {
      if (rss.kb * 1024 > (o.rssAbortBytes ?? 4 * 1024 ** 3) && !rssAborted) {
        rssAborted = true;
        log(`serve RSS ${(rss.kb / 1024).toFixed(0)} MB: stopping the fuzz early`);
        fuzz.stop();
      }
    }, 200);
    const good = (async () => {
      const rng = new Rng(o.seed ^ 0x5eed);
      for (let k = 0; k < sendsN; k++) {
        const from = Math.floor((o.entries * k) / sendsN);
        const to = Math.floor((o.entries * (k + 1)) / sendsN);
        const file = join(dir, `good-${k}.jsonl`);
        await writeGoodEntries(file, from, to, rng);
        // Spread the sends over the campaign: send k starts once the fuzzer is k/sends of the way.
        while (fuzz.report.inputs < (o.inputs * k) / sendsN && !fuzz.report.deadlineHit && !exitedEarly) {
          await sleep(100);
        }
        log(`send ${k + 1}/${sendsN}: ids ${from}..${to - 1}`);
        const send = spawnTlslog([
          "send",
          "--host",
          "localhost",
          "--port",
          String(serve.port),
          "--ca",
          certs.caPath,
          "--batch-size",
          "500",
          "--retries",
          "20",
          "--retry-max-delay",
          "2s",
          file,
        ]);
        const out = await send.output;
        sendResults.push({ code: out.code, stderr: out.stderr.slice(-2000) });
      }
    })().finally(() => goodDone = true);
    const [fuzzReport] = await Promise.all([fuzz.done, good]).finally(() => clearInterval(rssGuard));
    log(`fuzz done: ${fuzzReport.inputs} inputs in ${(fuzzReport.durationMs / 1000).toFixed(1)} s`);

    // The counters are updated when the collector sees a close; give late ones a moment.
    let stats: Record<string, unknown> | null = null;
    const lowerBound = Math.max(
      fuzzReport.mustRefuse,
      fuzzReport.observed.frameRefusals + fuzzReport.observed.entryRefusals + fuzzReport.mustTruncated +
        fuzzReport.mustTls,
    );
    for (let i = 0; i < 50; i++) {
      try {
        stats = await fetchStats(url, token, 10_000);
      } catch (err) {
        probes.failures.push(`final stats: ${(err as Error).message}`);
      }
      const total = num(stats, "frames_rejected") + num(stats, "entries_rejected");
      if (total >= lowerBound && num(stats, "connections_active") === 0) break;
      await sleep(200);
    }
    probing = false;
    await prober;
    const serveAlive = !exitedEarly;
    rss.stop();
    let stopTimer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      serve.stop("SIGTERM"),
      new Promise<null>((resolve) => stopTimer = setTimeout(() => resolve(null), 60_000)),
    ]);
    clearTimeout(stopTimer);
    if (status === null) await serve.stop("SIGKILL");
    server = null;
    const serveExit = status ? { code: status.code, signal: status.signal } : null;
    const stored = await readStoredLines(dataDir);
    const delivery = deliveryReport(stored.ids, o.entries);
    const stderr = serve.stderr();
    const stderrLines = stderr.split("\n").filter((l) => l);
    const distinct = [...new Set(stderrLines.map((l) => l.replace(/\d+/g, "N")))].slice(0, 25);

    // --- the Done-when conditions ---
    check(
      "serve never crashed",
      serveAlive,
      serveAlive ? "alive until SIGTERM" : `exited during the campaign: ${stderr.slice(-1000)}`,
    );
    check(
      "serve answered every probe",
      probes.failed === 0 && probes.sent > 0,
      `${probes.ok}/${probes.sent} probes (PING + /api/stats) answered, slowest ${probes.maxMs.toFixed(0)} ms` +
        (probes.failures.length ? `; failures: ${probes.failures.join("; ")}` : ""),
    );
    check(
      "serve exits 0 on SIGTERM",
      serveExit?.code === 0,
      serveExit ? `code ${serveExit.code}${serveExit.signal ? `, signal ${serveExit.signal}` : ""}` : "no exit in 60 s",
    );
    check(
      `peak RSS < ${rssLimitKb / 1024} MB`,
      rss.kb > 0 && rss.kb < rssLimitKb,
      `${(rss.kb / 1024).toFixed(1)} MB (VmHWM, ${rss.samples} samples)`,
    );
    check(
      `malformed inputs >= ${o.inputs}`,
      fuzzReport.inputs >= o.inputs,
      `${fuzzReport.inputs} over ${fuzzReport.connections.total} connections`,
    );
    check(
      "every send exited 0",
      sendResults.length === sendsN && sendResults.every((r) => r.code === 0),
      sendResults.map((r) => r.code === 0 ? "0" : `${r.code}: ${r.stderr}`).join(", "),
    );
    const exact = delivery.stored === o.entries && delivery.distinct === o.entries && delivery.missing === 0 &&
      delivery.duplicated === 0 && delivery.unexpected === 0;
    check(
      `all ${o.entries} good entries stored exactly once`,
      exact,
      `stored ${delivery.stored}, distinct ${delivery.distinct}, missing ${delivery.missing}, duplicated ${delivery.duplicated}, unexpected ${delivery.unexpected}` +
        (exact ? "" : ` ${JSON.stringify(delivery.examples)}`),
    );
    const counted = num(stats, "frames_rejected") + num(stats, "entries_rejected");
    check(
      "refusal counters >= refusals the fuzzer proved were processed",
      counted >= lowerBound,
      `frames_rejected ${num(stats, "frames_rejected")} + entries_rejected ${
        num(stats, "entries_rejected")
      } = ${counted}; must-refuse frames processed ${fuzzReport.mustRefuse}, refusals seen in answers ${
        fuzzReport.observed.frameRefusals + fuzzReport.observed.entryRefusals
      } + truncated tails ${fuzzReport.mustTruncated} + refused handshakes ${fuzzReport.mustTls}`,
    );
    // v2 answers name their code; v1 errors are classified by their documented messages ("other" is not checked).
    const answeredByCode: Record<string, number> = { ...fuzzReport.observed.v2ByCode };
    for (const [code, n] of Object.entries(fuzzReport.observed.v1ByReason)) {
      if (code !== "other") answeredByCode[code] = (answeredByCode[code] ?? 0) + n;
    }
    const short = Object.entries(answeredByCode).filter(([code, n]) => reason(stats, code) < n);
    check(
      "rejected_by_reason covers every refusal answered, code by code",
      short.length === 0,
      short.length === 0
        ? Object.entries(answeredByCode).map(([c, n]) => `${c} ${reason(stats, c)}>=${n}`).join(", ")
        : short.map(([c, n]) => `${c}: counter ${reason(stats, c)} < answered ${n}`).join(", "),
    );
    check(
      "truncated_frame and tls_handshake cover the proven ones",
      reason(stats, "truncated_frame") >= fuzzReport.mustTruncated &&
        reason(stats, "tls_handshake") >= fuzzReport.mustTls,
      `truncated_frame ${reason(stats, "truncated_frame")} >= ${fuzzReport.mustTruncated}, tls_handshake ${
        reason(stats, "tls_handshake")
      } >= ${fuzzReport.mustTls}`,
    );
    check(
      "refusal counters <= what the fuzzer could have had refused",
      counted <= fuzzReport.upperBound,
      `${counted} <= ${fuzzReport.upperBound} (frames and lines and connections written)`,
    );
    check(
      "no protocol violations in the answers",
      fuzzReport.violations.total === 0,
      fuzzReport.violations.total === 0
        ? "every refusal refused, every duplicate not stored, every connection answered"
        : `${fuzzReport.violations.total}: ${JSON.stringify(fuzzReport.violations.byType)}; ${
          fuzzReport.violations.examples.slice(0, 5).join("; ")
        }`,
    );
    check(
      "no fuzz connection stalled",
      fuzzReport.connections.stalled === 0,
      `${fuzzReport.connections.stalled} stalled`,
    );
    if (stored.nonJson.length > 0) {
      findings.push(
        `${stored.nonJson.length} stored line(s) are not JSON objects (e.g. ${
          stored.nonJson.slice(0, 3).join("; ")
        }); ` +
          `sent kinds that may cause it: v2_bom_body x${fuzzReport.kinds["v2_bom_body"]?.sent ?? 0}`,
      );
    }
    if (stored.fuzz > fuzzReport.mayStore) {
      findings.push(
        `${stored.fuzz} fuzz entries stored, more than the ${fuzzReport.mayStore} the fuzzer sent that may be`,
      );
    }
    if (fuzzReport.surprises.total > 0) {
      findings.push(
        `${fuzzReport.surprises.total} answers other than expected (allowed): ${
          JSON.stringify(fuzzReport.surprises.byType)
        }`,
      );
    }
    return {
      fuzz: fuzzReport,
      limits,
      durationMs: performance.now() - started,
      peakRssKb: rss.kb,
      rssSamples: rss.samples,
      rssTimeline: rss.timeline,
      collectorMemory: (stats?.memory as Record<string, unknown> | undefined) ?? null,
      probes,
      serveAlive,
      serveExit,
      good: {
        entries: o.entries,
        sends: sendResults,
        delivery,
        fuzzStored: stored.fuzz,
        nonJsonLines: stored.nonJson.length,
        nonJsonExamples: stored.nonJson.slice(0, 5),
      },
      stats,
      checks,
      failures: checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`),
      findings,
      serveStderr: { lines: stderrLines.length, distinct, tail: stderrLines.slice(-10).join("\n") },
    };
  } finally {
    if (server) await server.stop("SIGKILL").catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const fmt = (n: number) => n.toLocaleString("en-US");

/** At most `n` evenly spaced elements of `xs`, the last one included. */
function thin<T>(xs: readonly T[], n: number): T[] {
  if (xs.length <= n) return [...xs];
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(xs[Math.round((i * (xs.length - 1)) / (n - 1))]!);
  return out;
}

/** The campaign as a Markdown report: inputs by kind, connections, duration, RSS, entries, counters, checks. */
export function formatCampaignReport(r: CampaignReport): string {
  const f = r.fuzz;
  const out: string[] = [];
  out.push(
    `Fuzz campaign, seed ${f.seed}: ${fmt(f.inputs)} malformed inputs (+ ${
      fmt(f.validFrames)
    } valid frames mixed in), ` +
      `${fmt(f.frames)} frames, ${(f.bytes / 1e6).toFixed(1)} MB, over ${fmt(f.connections.total)} connections in ${
        (f.durationMs / 1000).toFixed(1)
      } s (campaign ${
        (r.durationMs / 1000).toFixed(1)
      } s). Limits: frame ${r.limits.maxFrameBytes}, batch ${r.limits.maxBatchBytes}, entry ${r.limits.maxEntryBytes} bytes.`,
    "",
    "| input kind | sent | answered | refused | accepted | duplicate | must-refuse processed |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  );
  for (const [k, c] of Object.entries(f.kinds).sort(([a], [b]) => a.localeCompare(b))) {
    out.push(
      `| ${k} | ${fmt(c.sent)} | ${fmt(c.answered)} | ${fmt(c.refusedSeen)} | ${fmt(c.acceptedSeen)} | ${
        fmt(c.duplicateSeen)
      } | ${fmt(c.mustRefuse)} |`,
    );
  }
  const c = f.connections;
  const stats = r.stats;
  out.push(
    "",
    `Connections: ${fmt(c.total)} (${Object.entries(c.byType).map(([k, v]) => `${k} ${fmt(v)}`).join(", ")}); ` +
      `complete ${fmt(c.complete)}, closed by the collector ${fmt(c.closedByServer)}, connect failed ${
        fmt(c.connectFailed)
      }, stalled ${c.stalled}, cut by deadline ${c.cutByDeadline}${f.deadlineHit ? " (DEADLINE HIT)" : ""}.`,
    `Serve: peak RSS ${
      (r.peakRssKb / 1024).toFixed(1)
    } MB (${r.rssSamples} samples); probes ${r.probes.ok}/${r.probes.sent} ` +
      `answered (slowest ${r.probes.maxMs.toFixed(0)} ms); exit ${r.serveExit ? r.serveExit.code : "none"}; ` +
      `${fmt(r.serveStderr.lines)} stderr lines.`,
    `Serve RSS over time (s: MB): ${
      thin(r.rssTimeline, 12).map(([t, kb]) => `${t.toFixed(0)}: ${(kb / 1024).toFixed(0)}`).join(", ")
    }.`,
    ...(r.collectorMemory
      ? [
        `Collector memory governor (/api/stats memory): ${
          Object.entries(r.collectorMemory).map(([k, v]) =>
            `${k} ${typeof v === "number" && k.endsWith("bytes") ? `${(v / 1048576).toFixed(0)} MB` : v}`
          ).join(", ")
        }.`,
      ]
      : []),
    `Good client: ${fmt(r.good.entries)} entries in ${r.good.sends.length} sends (exit codes ${
      r.good.sends.map((s) => s.code).join(",")
    }); stored ${fmt(r.good.delivery.stored)}, distinct ${
      fmt(r.good.delivery.distinct)
    }, missing ${r.good.delivery.missing}, ` +
      `duplicated ${r.good.delivery.duplicated}; fuzz entries stored ${fmt(r.good.fuzzStored)} (may: ${
        fmt(f.mayStore)
      }); ` +
      `stored lines not JSON objects ${r.good.nonJsonLines}.`,
    "",
    "| counter | /api/stats | fuzzer |",
    "| --- | ---: | ---: |",
    `| frames_rejected + entries_rejected | ${fmt(num(stats, "frames_rejected") + num(stats, "entries_rejected"))} | ` +
      `>= ${fmt(f.mustRefuse)} must-refuse processed; ${
        fmt(f.observed.frameRefusals + f.observed.entryRefusals)
      } seen in answers; <= ${fmt(f.upperBound)} |`,
    `| frames_rejected | ${fmt(num(stats, "frames_rejected"))} | ${
      fmt(f.observed.frameRefusals)
    } frame refusals answered |`,
    `| entries_rejected | ${fmt(num(stats, "entries_rejected"))} | ${
      fmt(f.observed.entryRefusals)
    } in ACK rejected lists |`,
    `| frames_received | ${fmt(num(stats, "frames_received"))} | ${fmt(f.frames)} frames written |`,
    `| duplicates_suppressed | ${fmt(num(stats, "duplicates_suppressed"))} | |`,
    `| entries_written | ${fmt(num(stats, "entries_written"))} | ${fmt(r.good.entries)} good + up to ${
      fmt(f.mayStore)
    } fuzz |`,
    `| connections_total | ${fmt(num(stats, "connections_total"))} | ${fmt(c.total)} (TLS ones count) |`,
  );
  const reasons = new Set([
    ...Object.keys((stats?.rejected_by_reason as Record<string, number>) ?? {}),
    ...Object.keys(f.observed.v2ByCode),
    ...Object.keys(f.observed.v1ByReason),
  ]);
  for (const code of [...reasons].sort()) {
    const extra = code === "truncated_frame"
      ? `${fmt(f.mustTruncated)} proven tails`
      : code === "tls_handshake"
      ? `${fmt(f.mustTls)} proven refused handshakes`
      : `v2 ${fmt(f.observed.v2ByCode[code] ?? 0)}, v1 ${fmt(f.observed.v1ByReason[code] ?? 0)} answered`;
    out.push(`| rejected_by_reason.${code} | ${fmt(reason(stats, code))} | ${extra} |`);
  }
  out.push("", "| check | result | detail |", "| --- | --- | --- |");
  for (const ch of r.checks) {
    out.push(`| ${ch.name} | ${ch.ok ? "ok" : "**FAILED**"} | ${ch.detail.replaceAll("|", "/")} |`);
  }
  if (r.findings.length > 0) out.push("", "Findings (not Done-when conditions):", ...r.findings.map((x) => `- ${x}`));
  if (f.surprises.examples.length > 0) out.push("", "Surprise examples:", ...f.surprises.examples.map((x) => `- ${x}`));
  if (r.failures.length > 0) {
    out.push("", "serve stderr, distinct lines (digits as N):", ...r.serveStderr.distinct.map((l) => `    ${l}`));
  }
  return out.join("\n");
}
