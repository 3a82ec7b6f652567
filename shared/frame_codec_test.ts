import assert from "node:assert/strict";
import { encodeFrame, FrameDecoder, type FrameEvent } from "./frame_codec.ts";

const bytes = (...xs: number[]) => new Uint8Array(xs);
const frames = (events: FrameEvent[]) => events.map((e) => e.kind === "frame" ? [...e.payload] : e);

Deno.test("encodeFrame() prefixes a big-endian u32 length", () => {
  assert.deepStrictEqual([...encodeFrame(bytes(7, 8, 9))], [0, 0, 0, 3, 7, 8, 9]);
  assert.deepStrictEqual([...encodeFrame(new Uint8Array(0))], [0, 0, 0, 0]);
});

Deno.test("FrameDecoder.push() returns several frames from one chunk", () => {
  const d = new FrameDecoder({ maxFrameBytes: 100 });
  const chunk = new Uint8Array([...encodeFrame(bytes(1)), ...encodeFrame(bytes(2, 3)), ...encodeFrame(bytes())]);
  assert.deepStrictEqual(frames(d.push(chunk)), [[1], [2, 3], []]);
  assert.equal(d.idle, true);
});

Deno.test("FrameDecoder.push() reassembles a frame split at every byte", () => {
  const d = new FrameDecoder({ maxFrameBytes: 100 });
  const wire = new Uint8Array([...encodeFrame(bytes(10, 20, 30, 40)), ...encodeFrame(bytes(50))]);
  const out: FrameEvent[] = [];
  for (const b of wire) {
    out.push(...d.push(bytes(b)));
    if (out.length === 0) assert.equal(d.idle, false);
  }
  assert.deepStrictEqual(frames(out), [[10, 20, 30, 40], [50]]);
  assert.equal(d.idle, true);
});

Deno.test("FrameDecoder.push() skips an oversized frame and carries on with the next", () => {
  const d = new FrameDecoder({ maxFrameBytes: 4, headBytes: 2 });
  const big = encodeFrame(bytes(9, 8, 7, 6, 5, 4));
  const wire = new Uint8Array([...big, ...encodeFrame(bytes(1, 2))]);
  const out = [...d.push(wire.subarray(0, 7)), ...d.push(wire.subarray(7))];
  assert.deepStrictEqual(frames(out), [{ kind: "oversize", length: 6, head: bytes(9, 8) }, [1, 2]]);
});

Deno.test("FrameDecoder.push() does not buffer a length near 2^32", () => {
  const d = new FrameDecoder({ maxFrameBytes: 1024 });
  assert.deepStrictEqual(d.push(bytes(0xff, 0xff, 0xff, 0xfe, 1, 2, 3)), []);
  assert.equal(d.idle, false);
  // 4 GiB would be skipped as it streams; memory held is only the head.
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < 8; i++) assert.deepStrictEqual(d.push(chunk), []);
});

Deno.test("FrameDecoder.push() hands out frames that later chunks do not overwrite", () => {
  const d = new FrameDecoder({ maxFrameBytes: 100 });
  const [first] = d.push(new Uint8Array([0, 0, 0, 3, 1, 2]));
  assert.equal(first, undefined);
  const [frame] = d.push(new Uint8Array([3]));
  d.push(new Uint8Array([0, 0, 0, 3, 9, 9, 9]));
  assert.deepStrictEqual(frames([frame!]), [[1, 2, 3]]);
});
