import assert from "node:assert/strict";
import { InvalidInputError, type InvalidLine, readLineChunks, selectEntries } from "./line_reader.ts";

function streamOf(...parts: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    type: "bytes",
    start(controller) {
      for (const p of parts) controller.enqueue(enc.encode(p));
      controller.close();
    },
  });
}

async function allLines(stream: ReadableStream<Uint8Array>): Promise<[number, string][]> {
  const out: [number, string][] = [];
  for await (const c of readLineChunks(stream, "f")) c.lines.forEach((l, i) => out.push([c.firstLine + i, l]));
  return out;
}

Deno.test("readLineChunks() numbers lines across chunk boundaries, CRLF and a last unterminated line", async () => {
  assert.deepStrictEqual(await allLines(streamOf('{"a":', '1}\r\n{"b"', ":2}\n\n", '{"c":3}')), [
    [1, '{"a":1}'],
    [2, '{"b":2}'],
    [3, ""],
    [4, '{"c":3}'],
  ]);
});

Deno.test("readLineChunks() reports the byte offset after each chunk's last line, from a resumed offset", async () => {
  const ends: [number, number][] = [];
  for await (
    const c of readLineChunks(streamOf('{"a":"é"}\n{"b"', ':2}\r\n{"c"'), "f", { firstLine: 7, offset: 100 })
  ) {
    ends.push([c.firstLine, c.endOffset]);
  }
  // One read takes both parts. é is 2 bytes: lines 7-8 end at 100 + 11 + 9, the unterminated line 9 at the end.
  assert.deepStrictEqual(ends, [[7, 120], [9, 124]]);
});

Deno.test("readLineChunks() decodes a multi-byte character split between chunks", async () => {
  const bytes = new TextEncoder().encode('{"n":"é"}\n');
  const stream = new ReadableStream({
    type: "bytes",
    start(c) {
      c.enqueue(bytes.slice(0, 7));
      c.enqueue(bytes.slice(7));
      c.close();
    },
  });
  assert.deepStrictEqual(await allLines(stream), [[1, '{"n":"é"}']]);
});

Deno.test("selectEntries() keeps objects, counts blanks, reports the rest with file and line", () => {
  const seen: InvalidLine[] = [];
  const out = selectEntries(
    { source: "app.jsonl", firstLine: 10, lines: [' {"a":1} ', "", "[1]", "oops", '{"b":2}'], endOffset: 0 },
    (i) => void seen.push(i),
  );
  assert.deepStrictEqual(out, { source: "app.jsonl", entries: ['{"a":1}', '{"b":2}'], lineNos: [10, 14], blank: 1 });
  assert.equal(selectEntries({ source: "s", firstLine: 1, lines: [], endOffset: 0 }, () => {}).entries.length, 0);
  assert.deepStrictEqual(seen.map((i) => `${i.source}:${i.line}`), ["app.jsonl:12", "app.jsonl:13"]);
  assert.match(seen[0]!.reason, /not a JSON object \(got an array\)/);
});

Deno.test("selectEntries() stops at a bad line when the handler says stop, keeping the entries before it", () => {
  const out = selectEntries(
    { source: "x", firstLine: 1, lines: ["{}", "7", '{"late":1}'], endOffset: 0 },
    () => "stop",
  );
  assert.deepStrictEqual(out, {
    source: "x",
    entries: ["{}"],
    lineNos: [1],
    blank: 0,
    stoppedAt: { source: "x", line: 2, reason: "not a JSON object (got a number)" },
  });
  assert.equal(new InvalidInputError(out.stoppedAt!).message, "x:2: not a JSON object (got a number)");
});

Deno.test("selectEntries() with shape validation lets brace-wrapped lines through and parses the rest", () => {
  const seen: InvalidLine[] = [];
  const out = selectEntries(
    { source: "f", firstLine: 1, lines: ['{"a":1}', "{not json}", "[1]", "plain"], endOffset: 0 },
    (i) => void seen.push(i),
    "shape",
  );
  assert.deepStrictEqual(out.entries, ['{"a":1}', "{not json}"]);
  assert.deepStrictEqual(seen.map((i) => [i.line, i.reason.split(" (")[0]]), [[3, "not a JSON object"], [
    4,
    "not valid JSON",
  ]]);
});
