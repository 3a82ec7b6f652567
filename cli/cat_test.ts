import assert from "node:assert/strict";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { runTlslog } from "../tests/test_support.ts";
import { entryTime } from "./cat.ts";

const entry = (id: number, time: string | null, dept: string) =>
  JSON.stringify({ id, ...(time ? { timestamp: time } : {}), dept });

async function withStore(fn: (dir: string, all: string[]) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlslog-cat-" });
  try {
    const first = [
      entry(1, "2026-11-22T08:00:00Z", "cardiology"),
      entry(2, "2026-11-22T09:00:00Z", "dermatology"),
      entry(3, null, "cardiology"),
    ];
    const second = [entry(4, "2026-11-22T10:00:00Z", "cardiology"), entry(5, "2026-11-22T11:00:00Z", "oncology")];
    // A closed, compressed file and the file being written, as the collector leaves them.
    await Deno.writeFile(join(dir, "tlslog-00000001.jsonl.gz"), gzipSync(first.join("\n") + "\n"));
    await Deno.writeTextFile(join(dir, "tlslog-00000002.jsonl"), second.join("\n") + "\n");
    await Deno.writeTextFile(join(dir, "tlslog-commits.log"), "");
    await fn(dir, [...first, ...second]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("entryTime() takes the first time field that parses, or null", () => {
  assert.equal(entryTime('{"timestamp":"2026-11-22T09:00:00Z"}'), Date.parse("2026-11-22T09:00:00Z"));
  assert.equal(entryTime('{"time":"not a time","ts":1700000000000}'), 1700000000000);
  assert.equal(entryTime('{"@timestamp":"2026-11-22T09:00:00.5Z"}'), Date.parse("2026-11-22T09:00:00.5Z"));
  assert.equal(entryTime('{"id":1}'), null);
  assert.equal(entryTime("not json"), null);
  assert.equal(entryTime("[1,2]"), null);
});

Deno.test("tlslog cat prints every entry in order across compressed and plain files, byte for byte", async () => {
  await withStore(async (dir, all) => {
    const r = await runTlslog(["cat", dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, all.join("\n") + "\n");
  });
});

Deno.test("tlslog cat --since/--until select by the entry's time (from inclusive, to exclusive), --grep by line", async () => {
  await withStore(async (dir, all) => {
    const since = await runTlslog(["cat", dir, "--since", "2026-11-22T09:00:00Z", "--until", "2026-11-22T11:00:00Z"]);
    assert.equal(since.code, 0, since.stderr);
    // Entry 3 has no time: a time filter does not match it.
    assert.equal(since.stdout, [all[1], all[3]].join("\n") + "\n");
    const grep = await runTlslog(["cat", dir, "--grep", "cardio"]);
    assert.equal(grep.stdout, [all[0], all[2], all[3]].join("\n") + "\n");
    const both = await runTlslog(["cat", dir, "--grep", "cardio", "--since", "2026-11-22T08:30:00Z"]);
    assert.equal(both.stdout, all[3] + "\n");
  });
});

Deno.test("tlslog cat refuses a bad time, a bad pattern and a missing directory with usage errors", async () => {
  await withStore(async (dir) => {
    const badTime = await runTlslog(["cat", dir, "--since", "yesterday"]);
    assert.equal(badTime.code, 2);
    assert.match(badTime.stderr, /--since must be an ISO time/);
    const badRe = await runTlslog(["cat", dir, "--grep", "("]);
    assert.equal(badRe.code, 2);
    assert.match(badRe.stderr, /--grep is not a valid regular expression/);
    const missing = await runTlslog(["cat", join(dir, "nope")]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no directory/);
  });
});
