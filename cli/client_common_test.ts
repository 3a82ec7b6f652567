import assert from "node:assert/strict";
import { formatSummary, rateFlag, SEND_FLAGS } from "./client_common.ts";
import { type CommandSpec, parseFlags, UsageError } from "./flags.ts";
import type { SendSummary } from "../client/sender.ts";

const spec: CommandSpec = { name: "send", summary: "s", usage: "u", flags: SEND_FLAGS };

Deno.test("rateFlag() reads entries per second, fractions too, and is absent by default", () => {
  assert.equal(rateFlag(parseFlags(spec, []), spec), undefined);
  assert.equal(rateFlag(parseFlags(spec, ["--rate", "1000"]), spec), 1000);
  assert.equal(rateFlag(parseFlags(spec, ["--rate", "0.5"]), spec), 0.5);
  assert.equal(rateFlag(parseFlags(spec, ["--rate", ".25"]), spec), 0.25);
  assert.equal(rateFlag(parseFlags(spec, ["--rate", "10000000"]), spec), 10_000_000);
});

Deno.test("rateFlag() refuses zero, negatives, words, exponents and more than 10,000,000", () => {
  for (const bad of ["0", "0.0", "-1", "abc", "1e3", "10000000.5", "1,000", "", " "]) {
    assert.throws(() => rateFlag(parseFlags(spec, [`--rate=${bad}`]), spec), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.equal(e.command, "send");
      assert.equal(
        e.message,
        `--rate must be a number of entries per second above 0 and at most 10,000,000 (e.g. 500 or 0.5), got "${bad}"`,
      );
      return true;
    });
  }
});

Deno.test("formatSummary() shows the rate limit and the time waited for it, only when there is one", () => {
  const summary: SendSummary = {
    entries: 10,
    resumedFromSpool: 0,
    acknowledged: 10,
    rejected: [],
    duplicates: 0,
    batches: 1,
    rawBytes: 100,
    compressedBytes: 50,
    retries: 0,
    resentBatches: 0,
    dropped: 0,
    spoolBatches: 0,
    spoolEntries: 0,
    spoolBytes: 0,
    oldestUnackedMs: null,
    rateLimit: null,
    rateLimitWaitMs: 0,
  };
  assert.doesNotMatch(formatSummary(summary, 1), /rate limit/);
  const limited = formatSummary({ ...summary, rateLimit: 1000, rateLimitWaitMs: 4210 }, 5);
  assert.match(limited, /\n {2}rate limit {13}1,000 entries\/s: waited 4\.2 s in all\n/);
  assert.match(formatSummary({ ...summary, rateLimit: 0.5, rateLimitWaitMs: 0 }, 1), /rate limit\s+0\.5 entries\/s/);
});
