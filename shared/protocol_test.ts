import assert from "node:assert/strict";
import {
  decodeMessage,
  encodeAck,
  encodeBatch,
  encodeHello,
  encodeNack,
  encodePing,
  encodePong,
  encodeStatus,
  encodeWelcome,
  MessageType,
  peekBatchSeq,
  ProtocolError,
} from "./protocol.ts";

Deno.test("decodeMessage() reads back every encoded message", () => {
  const welcome = { stream: "s", last_seq: 4, max_frame_bytes: 1, max_batch_bytes: 2, max_entry_bytes: 3 };
  assert.deepStrictEqual(decodeMessage(encodeHello({ stream: "abc", client: "t" })), {
    type: "hello",
    hello: { stream: "abc", client: "t" },
  });
  assert.deepStrictEqual(decodeMessage(encodeWelcome(welcome)), { type: "welcome", welcome });
  assert.deepStrictEqual(decodeMessage(encodeAck({ seq: 9, stored: 3 })), { type: "ack", ack: { seq: 9, stored: 3 } });
  assert.deepStrictEqual(decodeMessage(encodeNack({ seq: null, code: "x", error: "y" })), {
    type: "nack",
    nack: { seq: null, code: "x", error: "y" },
  });
  assert.deepStrictEqual(decodeMessage(encodePing(0xdeadbeef)), { type: "ping", nonce: 0xdeadbeef });
  assert.deepStrictEqual(decodeMessage(encodePong(7)), { type: "pong", nonce: 7 });
  const status = { spool_entries: 5, spool_bytes: 100, oldest_unacked_ms: null, retries: 2, dropped: 0 };
  assert.deepStrictEqual(decodeMessage(encodeStatus(status)), { type: "status", status });
});

Deno.test("encodeBatch() carries seq, count and body; decodeMessage() reads them", () => {
  const body = new Uint8Array([1, 2, 3]);
  const payload = encodeBatch(2 ** 40 + 5, 17, body);
  assert.equal(payload[0], MessageType.Batch);
  const m = decodeMessage(payload);
  assert.deepStrictEqual({ ...m, body: m.type === "batch" ? [...m.body] : null }, {
    type: "batch",
    seq: 2 ** 40 + 5,
    count: 17,
    body: [1, 2, 3],
  });
  assert.equal(peekBatchSeq(payload.subarray(0, 16)), 2 ** 40 + 5);
  assert.equal(peekBatchSeq(encodePing(1)), null);
});

Deno.test("encodeBatch() refuses a seq that is not a positive safe integer", () => {
  for (const seq of [0, -1, 1.5, 2 ** 53]) assert.throws(() => encodeBatch(seq, 1, new Uint8Array()), RangeError);
});

Deno.test("decodeMessage() rejects malformed messages with a code", () => {
  const cases: [Uint8Array, string][] = [
    [new Uint8Array(), "bad_message"],
    [new Uint8Array([0x7f]), "unknown_type"],
    [new Uint8Array([MessageType.Batch, 0, 0]), "bad_message"],
    [encodeBatch(1, 1, new Uint8Array()).fill(0, 1, 9), "bad_seq"],
    [new Uint8Array([MessageType.Hello, 0xff, 0xfe]), "bad_message"],
    [new Uint8Array([MessageType.Hello, ...new TextEncoder().encode("[1]")]), "bad_message"],
    [encodeHello({ stream: "" }), "bad_message"],
    [new Uint8Array([MessageType.Ping, 1, 2]), "bad_message"],
  ];
  for (const [payload, code] of cases) {
    assert.throws(() => decodeMessage(payload), (e: unknown) => e instanceof ProtocolError && e.code === code);
  }
});
