import assert from "node:assert/strict";
import { ChainHasher, ChainHasherError } from "./chain_hasher.ts";
import { chainLines, type ChainState, genesisState, toHex } from "./entry_chain.ts";

const enc = new TextEncoder();

/** A small deterministic PRNG (mulberry32), so a failure can be reproduced. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random bytes with newlines in them: some empty lines, sometimes a last line without a newline. */
function randomChunk(rand: () => number): Uint8Array {
  const out = new Uint8Array(Math.floor(rand() * 600));
  for (let i = 0; i < out.length; i++) out[i] = rand() < 0.05 ? 0x0a : Math.floor(rand() * 256);
  return out;
}

function randomState(rand: () => number): ChainState {
  if (rand() < 0.1) return genesisState();
  return { seq: Math.floor(rand() * 1e9), head: Uint8Array.from({ length: 32 }, () => Math.floor(rand() * 256)) };
}

const stateText = (s: ChainState) => `${s.seq} ${toHex(s.head)}`;

Deno.test("ChainHasher.chain() gives chainLines()'s result for many chunks sent at once, answered in order", async () => {
  const hasher = new ChainHasher();
  try {
    const rand = prng(20240611);
    const requests = Array.from({ length: 300 }, () => ({ state: randomState(rand), data: randomChunk(rand) }));
    // Some chunks are large, so the worker is busy while later requests queue up.
    requests[3]!.data = enc.encode("x".repeat(200_000) + "\n" + "y".repeat(100_000) + "\n");
    requests[150]!.data = new Uint8Array(0);
    const order: number[] = [];
    const results = await Promise.all(
      requests.map((r, i) =>
        hasher.chain(r.state, r.data).then((res) => {
          order.push(i);
          return res;
        })
      ),
    );
    assert.deepStrictEqual(order, requests.map((_, i) => i));
    for (const [i, r] of requests.entries()) {
      const expected = chainLines(r.state, r.data);
      assert.equal(results[i]!.records, expected.records, `request ${i}`);
      assert.equal(stateText(results[i]!.state), stateText(expected.state), `request ${i}`);
    }
    assert.equal(results[150]!.records, "");
    assert.equal(stateText(results[150]!.state), stateText(requests[150]!.state));
  } finally {
    hasher.close();
  }
});

Deno.test("ChainHasher chains a sequence of chunks, each continuing from the last answer, like one chainLines()", async () => {
  const hasher = new ChainHasher();
  try {
    const rand = prng(7);
    const chunks = Array.from(
      { length: 50 },
      (_, c) =>
        enc.encode(
          Array.from({ length: 1 + Math.floor(rand() * 5) }, (_, i) => JSON.stringify({ c, i }) + "\n").join(""),
        ),
    );
    let state = genesisState();
    let records = "";
    for (const data of chunks) {
      const r = await hasher.chain(state, data);
      state = r.state;
      records += r.records;
    }
    const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    const expected = chainLines(genesisState(), all);
    assert.equal(records, expected.records);
    assert.equal(stateText(state), stateText(expected.state));
  } finally {
    hasher.close();
  }
});

Deno.test("ChainHasher.close() rejects pending requests and every later chain() with ChainHasherError", async () => {
  // Count terminate() calls: Deno's test sanitizers do not report a Worker left running.
  const Original = globalThis.Worker;
  let terminated = 0;
  globalThis.Worker = class extends Original {
    override terminate(): void {
      terminated++;
      super.terminate();
    }
  };
  let hasher: ChainHasher;
  try {
    hasher = new ChainHasher();
  } finally {
    globalThis.Worker = Original;
  }
  const data = enc.encode('{"a":1}\n');
  // One answered request first: the worker is up.
  const first = await hasher.chain(genesisState(), data);
  assert.equal(first.state.seq, 1);
  const pending = hasher.chain(first.state, enc.encode("z".repeat(1_000_000) + "\n"));
  hasher.close();
  assert.equal(terminated, 1, "close() terminates the worker");
  await assert.rejects(pending, ChainHasherError);
  await assert.rejects(hasher.chain(genesisState(), data), ChainHasherError);
  await assert.rejects(hasher.chain(genesisState(), data), (err: unknown) => {
    assert.ok(err instanceof ChainHasherError);
    assert.equal(err.name, "ChainHasherError");
    assert.match(err.message, /closed/);
    return true;
  });
});
