/**
 * The collector's --require-deidentified check, end to end: `tlslog send`
 * (without a policy) ships raw identifiers; the collector refuses, sets aside
 * or redacts exactly those entries, and the rest of the batch is stored.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createPrivacyGuard, type GuardMode } from "../server/privacy_guard.ts";
import { DEFAULT_POLICY } from "../shared/privacy_policy.ts";
import { readStored, runTlslog, startTestCollector, testCerts } from "./test_support.ts";

const input = [
  { id: 1, note: "follow-up in two weeks" },
  { id: 2, note: "SSN 123-45-6789 on file" },
  { id: 3, note: "paid with 4111 1111 1111 1111" },
  { id: 4, contact: { mail: "jane@example.org" } },
  { id: 5, note: "no changes" },
].map((e) => JSON.stringify(e)).join("\n") + "\n";

async function sendRaw(mode: GuardMode) {
  const tc = await startTestCollector({ guard: createPrivacyGuard(mode, DEFAULT_POLICY.detectors) });
  const { caPath } = await testCerts();
  const r = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath], { stdin: input });
  return { tc, r };
}

Deno.test("serve --require-deidentified reject: refuses raw SSN, card and e-mail entries with field and detector; stores the rest", async () => {
  const { tc, r } = await sendRaw("reject");
  await using _ = tc;
  assert.equal(r.code, 1);
  assert.match(r.stderr, /<stdin>:2: rejected by server: entry is not de-identified: field "note" holds ssn/);
  assert.match(r.stderr, /<stdin>:3: rejected by server: entry is not de-identified: field "note" holds card/);
  assert.match(r.stderr, /<stdin>:4: rejected by server: entry is not de-identified: field "contact.mail" holds email/);
  assert.deepStrictEqual((await readStored(tc.dataDir)).map((e) => e.id), [1, 5]);
  const s = tc.collector.stats();
  assert.deepStrictEqual(s.privacy, {
    mode: "reject",
    entries_checked: 5,
    entries_identifiable: 3,
    rejected: 3,
    quarantined: 0,
    redacted: 0,
    by_detector: { ssn: 1, card: 1, email: 1 },
    fields_pseudonymised: 0,
    key_ids: {},
    redactions: {},
  });
  assert.equal(s.rejected_by_reason.not_deidentified, 3);
});

Deno.test("serve --require-deidentified quarantine: identifiable entries go to a restricted file, not the store", async () => {
  const { tc, r } = await sendRaw("quarantine");
  await using _ = tc;
  assert.equal(r.code, 1);
  assert.deepStrictEqual((await readStored(tc.dataDir)).map((e) => e.id), [1, 5]);
  const path = join(tc.dataDir, "quarantine", "quarantine.jsonl");
  const aside = (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l).id);
  assert.deepStrictEqual(aside, [2, 3, 4]);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  assert.equal(tc.collector.stats().privacy?.quarantined, 3);
});

Deno.test("serve --require-deidentified redact: identifiable entries are stored with the matches redacted", async () => {
  const { tc, r } = await sendRaw("redact");
  await using _ = tc;
  assert.equal(r.code, 0, r.stderr);
  assert.deepStrictEqual(await readStored(tc.dataDir), [
    { id: 1, note: "follow-up in two weeks" },
    { id: 2, note: "SSN [REDACTED:SSN] on file" },
    { id: 3, note: "paid with [REDACTED:CARD]" },
    { id: 4, contact: { mail: "[REDACTED:EMAIL]" } },
    { id: 5, note: "no changes" },
  ]);
  assert.equal(tc.collector.stats().privacy?.redacted, 3);
});
