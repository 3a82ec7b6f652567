/**
 * Protocol v1 as originally specified, spoken by a raw client over real TLS
 * without ALPN: [u32 BE length][gzip(JSON object)] per frame, answered by
 * [u32 BE length]{"status":"ok"}.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { listDataFiles } from "../server/rotating_store.ts";
import { readStored, startTestCollector, testCerts } from "./test_support.ts";

const enc = new TextEncoder();

function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

/** A v1 client written from the description alone. */
class V1Client {
  #buffer = new Uint8Array(0);
  private constructor(readonly conn: Deno.TlsConn) {}

  static async connect(port: number): Promise<V1Client> {
    const conn = await Deno.connectTls({ hostname: "localhost", port, caCerts: [(await testCerts()).ca] });
    return new V1Client(conn);
  }

  async send(payload: Uint8Array): Promise<void> {
    const data = frame(payload);
    for (let off = 0; off < data.length;) off += await this.conn.write(data.subarray(off));
  }

  async answer(): Promise<unknown> {
    const need = async (n: number) => {
      while (this.#buffer.length < n) {
        const chunk = new Uint8Array(65536);
        const got = await this.conn.read(chunk);
        if (got === null) throw new Error("connection closed");
        this.#buffer = new Uint8Array([...this.#buffer, ...chunk.subarray(0, got)]);
      }
    };
    await need(4);
    const length = new DataView(this.#buffer.buffer).getUint32(0);
    await need(4 + length);
    const body = this.#buffer.slice(4, 4 + length);
    this.#buffer = this.#buffer.slice(4 + length);
    return JSON.parse(new TextDecoder().decode(body));
  }

  close(): void {
    this.conn.close();
  }
}

Deno.test("v1: 1,000 entries one per frame get 1,000 {status:ok} and land in 100 files", async () => {
  await using tc = await startTestCollector();
  const client = await V1Client.connect(tc.port);
  const answers: unknown[] = [];
  for (let i = 0; i < 1000; i++) {
    await client.send(gzipSync(enc.encode(JSON.stringify({ id: i, msg: "consultation started" }))));
    answers.push(await client.answer());
  }
  client.close();
  assert.deepStrictEqual(answers, Array(1000).fill({ status: "ok" }));
  assert.equal((await listDataFiles(tc.dataDir)).length, 100);
  assert.deepStrictEqual(
    (await readStored(tc.dataDir)).map((e) => e.id),
    Array.from({ length: 1000 }, (_, i) => i),
  );
  const s = tc.collector.stats();
  assert.deepStrictEqual([s.entries_received, s.entries_written, s.files_written], [1000, 1000, 100]);
});

Deno.test("v1: bad frames get an error answer and the connection carries on", async () => {
  await using tc = await startTestCollector({ maxFrameBytes: 4096, maxBatchBytes: 65536 });
  const client = await V1Client.connect(tc.port);
  const cases: [Uint8Array, RegExp][] = [
    [enc.encode("not gzip at all"), /not valid gzip/],
    [gzipSync(enc.encode("{nope")), /entry is not valid JSON/],
    [gzipSync(enc.encode("[1,2,3]")), /entry is not a JSON object \(got an array\)/],
    [gzipSync(new Uint8Array(1 << 20)), /decompressed size exceeds max 65536/],
    [crypto.getRandomValues(new Uint8Array(5000)), /frame of 5000 bytes exceeds max-frame-bytes 4096/],
    [new Uint8Array(0), /not valid gzip/],
  ];
  for (const [payload, error] of cases) {
    await client.send(payload);
    const answer = await client.answer() as { status: string; error: string };
    assert.equal(answer.status, "error");
    assert.match(answer.error, error);
  }
  // Pretty-printed JSON is accepted and stored as one line.
  await client.send(gzipSync(enc.encode('{\n  "id": 1,\n  "note": "after the errors"\n}')));
  assert.deepStrictEqual(await client.answer(), { status: "ok" });
  client.close();
  assert.deepStrictEqual(await readStored(tc.dataDir), [{ id: 1, note: "after the errors" }]);
  const s = tc.collector.stats();
  assert.deepStrictEqual([s.frames_received, s.frames_rejected, s.entries_written], [7, 6, 1]);
  assert.deepStrictEqual(s.rejected_by_reason, {
    bad_gzip: 2,
    invalid_entry: 2,
    decompressed_too_large: 1,
    frame_too_large: 1,
  });
});

Deno.test("v1: several frames written at once are answered in order", async () => {
  await using tc = await startTestCollector();
  const client = await V1Client.connect(tc.port);
  const wire = [1, 2, 3].map((i) => frame(gzipSync(enc.encode(JSON.stringify({ i })))));
  wire.splice(1, 0, frame(enc.encode("garbage")));
  await client.send(new Uint8Array(0)); // an empty frame first: refused
  await client.conn.write(new Uint8Array(wire.flatMap((w) => [...w])));
  const answers = [];
  for (let i = 0; i < 5; i++) answers.push(((await client.answer()) as { status: string }).status);
  client.close();
  assert.deepStrictEqual(answers, ["error", "ok", "error", "ok", "ok"]);
  assert.deepStrictEqual(await readStored(tc.dataDir), [{ i: 1 }, { i: 2 }, { i: 3 }]);
});
