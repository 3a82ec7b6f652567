/**
 * Provenance under mutual TLS, over real TLS sockets with real client
 * certificates: every stored entry names the certificate (CN and SANs) that
 * sent it, in v2 and v1; an entry that sets the field itself is refused; and
 * a stream belongs to its identity, so another client naming the same stream
 * id cannot get its batches taken for duplicates.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { PROVENANCE_FIELD } from "../server/provenance.ts";
import { writeAll } from "../shared/bytes.ts";
import { encodeFrame, FrameDecoder } from "../shared/frame_codec.ts";
import { ALPN_V2, decodeMessage, encodeBatch, encodeHello, type V2Message } from "../shared/protocol.ts";
import { readStored, startTestCollector, testCerts } from "./test_support.ts";
import { tempDir } from "./fault_support.ts";

const enc = new TextEncoder();

/** A client certificate from the test CA, made with openssl. */
async function issueClient(dir: string, cn: string, san: string): Promise<{ cert: string; key: string }> {
  const c = await testCerts();
  const run = async (...args: string[]) => {
    const out = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
  };
  const key = join(dir, `${cn}.key`);
  const csr = join(dir, `${cn}.csr`);
  const crt = join(dir, `${cn}.crt`);
  const ext = join(dir, `${cn}.ext`);
  await Deno.writeTextFile(ext, `basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=${san}\n`);
  await run(
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    csr,
    "-subj",
    `/CN=${cn}`,
  );
  await run(
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    c.caPath,
    "-CAkey",
    join(c.dir, "ca.key"),
    "-CAcreateserial",
    "-out",
    crt,
    "-days",
    "2",
    "-extfile",
    ext,
  );
  return { cert: await Deno.readTextFile(crt), key: await Deno.readTextFile(key) };
}

/** Reads framed answers from a TLS connection. */
class Framed {
  #decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
  #queue: Uint8Array[] = [];
  constructor(readonly conn: Deno.TlsConn) {}

  async send(...payloads: Uint8Array[]): Promise<void> {
    for (const p of payloads) await writeAll(this.conn, encodeFrame(p));
  }

  async next(): Promise<Uint8Array> {
    while (this.#queue.length === 0) {
      const buf = new Uint8Array(65536);
      const n = await this.conn.read(buf);
      if (n === null) throw new Error("closed");
      for (const e of this.#decoder.push(buf.subarray(0, n))) {
        if (e.kind === "frame") this.#queue.push(e.payload.slice());
      }
    }
    return this.#queue.shift()!;
  }

  async nextV2(): Promise<V2Message> {
    return decodeMessage(await this.next());
  }
}

async function connect(port: number, id: { cert: string; key: string }, v2: boolean): Promise<Framed> {
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [(await testCerts()).ca],
    cert: id.cert,
    key: id.key,
    ...(v2 ? { alpnProtocols: [ALPN_V2] } : {}),
  });
  await conn.handshake();
  return new Framed(conn);
}

function batch(seq: number, entries: string[]): Uint8Array {
  return encodeBatch(seq, entries.length, gzipSync(enc.encode(entries.map((e) => e + "\n").join(""))));
}

Deno.test("mutual TLS: each stored entry names its sender; a stream belongs to its identity; the field cannot be forged", async () => {
  await using dir = await tempDir("tlslog-provenance-");
  const c = await testCerts();
  const billing = await issueClient(dir.path, "billing", "DNS:billing.clinic.example,IP:10.0.0.7");
  const triage = await issueClient(dir.path, "triage", "DNS:triage.clinic.example");
  await using tc = await startTestCollector({ clientCa: c.ca, rotateEntries: 1000 });

  // Both clients name the same stream and number their batches from 1.
  const a = await connect(tc.port, billing, true);
  await a.send(encodeHello({ stream: "shared-stream" }));
  assert.equal((await a.nextV2()).type, "welcome");
  await a.send(batch(1, ['{"id":"a1"}', "{}", `{"id":"forged","${PROVENANCE_FIELD}":{"cn":"triage"}}`]));
  const ackA = await a.nextV2();
  assert.equal(ackA.type, "ack");
  assert.equal(ackA.type === "ack" && ackA.ack.stored, 2);
  assert.deepEqual(ackA.type === "ack" && ackA.ack.rejected?.map((r) => [r.index, r.code]), [[2, "reserved_field"]]);

  const b = await connect(tc.port, triage, true);
  await b.send(encodeHello({ stream: "shared-stream" }));
  const welcome = await b.nextV2();
  assert.equal(welcome.type === "welcome" && welcome.welcome.last_seq, 0, "another identity's stream is its own");
  await b.send(batch(1, ['{"id":"b1"}', '  { "id" : "b2" }']));
  const ackB = await b.nextV2();
  assert.equal(ackB.type === "ack" && ackB.ack.stored, 2);
  assert.equal(ackB.type === "ack" && ackB.ack.duplicate, undefined);
  // The same identity resending its batch 1 is a duplicate, as before.
  await a.send(batch(1, ['{"id":"a1"}']));
  const again = await a.nextV2();
  assert.equal(again.type === "ack" && again.ack.duplicate, true);

  // v1: one entry per frame, stamped too; a forged field is refused.
  const v1 = await connect(tc.port, billing, false);
  await v1.send(gzipSync(enc.encode('{\n  "id": "v1"\n}')));
  assert.deepEqual(JSON.parse(new TextDecoder().decode(await v1.next())), { status: "ok" });
  await v1.send(gzipSync(enc.encode(`{"${PROVENANCE_FIELD}":"x"}`)));
  const refused = JSON.parse(new TextDecoder().decode(await v1.next()));
  assert.equal(refused.status, "error");
  assert.match(refused.error, /set by the collector/);
  for (const f of [a, b, v1]) f.conn.close();

  const stored = await readStored(tc.dataDir);
  const billingId = { cn: "billing", san: ["DNS:billing.clinic.example", "IP Address:10.0.0.7"] };
  const triageId = { cn: "triage", san: ["DNS:triage.clinic.example"] };
  assert.deepEqual(stored, [
    { [PROVENANCE_FIELD]: billingId, id: "a1" },
    { [PROVENANCE_FIELD]: billingId },
    { [PROVENANCE_FIELD]: triageId, id: "b1" },
    { [PROVENANCE_FIELD]: triageId, id: "b2" },
    { [PROVENANCE_FIELD]: billingId, id: "v1" },
  ]);
  // The field comes first on every line.
  assert.ok(stored.every((e) => Object.keys(e)[0] === PROVENANCE_FIELD));
  // Refusals counted by reason: the entry in the v2 batch and the v1 frame.
  assert.equal(tc.collector.stats().rejected_by_reason["reserved_field"], 2);
});

Deno.test("without mutual TLS nothing is stamped, and the reserved field is still refused", async () => {
  await using tc = await startTestCollector({ rotateEntries: 1000 });
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port: tc.port,
    caCerts: [(await testCerts()).ca],
    alpnProtocols: [ALPN_V2],
  });
  const f = new Framed(conn);
  await f.send(encodeHello({ stream: "s" }), batch(1, ['{"id":1}', `{"${PROVENANCE_FIELD}":{"cn":"billing"}}`]));
  assert.equal((await f.nextV2()).type, "welcome");
  const ack = await f.nextV2();
  assert.deepEqual(ack.type === "ack" && ack.ack.rejected?.map((r) => r.code), ["reserved_field"]);
  conn.close();
  assert.deepEqual(await readStored(tc.dataDir), [{ id: 1 }]);
});
