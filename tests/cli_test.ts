/**
 * The tlslog binary as a user runs it: child processes of `deno run -A
 * main.ts`, against collectors on real TLS sockets.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { generateConsultations, seededRandom } from "../client/healthcare_source.ts";
import { listDataFiles } from "../server/rotating_store.ts";
import { checkDeidentified } from "../shared/deidentify.ts";
import { DEFAULT_POLICY } from "../shared/privacy_policy.ts";
import { createPseudonymizer, parseKey } from "../shared/pseudonymizer.ts";
import { readStored, runTlslog, spawnServe, startTestCollector, testCerts } from "./test_support.ts";

Deno.test("tlslog --help and each subcommand's --help exit 0; unknown commands and flags exit 2 with a hint", async () => {
  const top = await runTlslog(["--help"]);
  assert.equal(top.code, 0);
  for (const cmd of ["serve", "send", "healthcare", "healthcheck", "demo", "report", "reidentify"]) {
    assert.match(top.stdout, new RegExp(`\\n  ${cmd} `));
    const help = await runTlslog([cmd, "--help"]);
    assert.equal(help.code, 0, cmd);
    assert.match(help.stdout, new RegExp(`Usage: tlslog ${cmd}`));
  }
  const unknownFlag = await runTlslog(["serve", "--prot", "1"]);
  assert.equal(unknownFlag.code, 2);
  assert.match(unknownFlag.stderr, /unknown flag '--prot'\nRun "tlslog serve --help" for usage/);
  const unknownCmd = await runTlslog(["sned"]);
  assert.equal(unknownCmd.code, 2);
  assert.match(unknownCmd.stderr, /unknown command "sned"/);
  const badValue = await runTlslog(["send", "--port", "0"]);
  assert.equal(badValue.code, 2);
  assert.match(badValue.stderr, /--port must be an integer from 1 to 65535, got "0"/);
  const badMode = await runTlslog(["serve", "--require-deidentified", "maybe"]);
  assert.equal(badMode.code, 2);
  assert.match(badMode.stderr, /--require-deidentified must be one of off, reject, quarantine, redact, got "maybe"/);
});

Deno.test("send: stdin lines are delivered; invalid lines are reported by line and skipped", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  // Line 7 looks like an object and is only found out by the collector's full check.
  const input = '{"id":1}\nnot json\n\n{"id":2}\n[3]\n{"id":3}\n{"id":4,}';
  const r = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath, "-"], { stdin: input });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /<stdin>:2: skipped: not valid JSON/);
  assert.match(r.stderr, /<stdin>:5: skipped: not a JSON object \(got an array\)/);
  assert.match(r.stdout, /entries\s+4\n\s+resumed from spool\s+0\n\s+acknowledged\s+3\n\s+rejected by server\s+0\n/);
  assert.match(r.stderr, /<stdin>:7: skipped \(found by the collector\): not valid JSON/);
  assert.match(r.stdout, /invalid lines skipped\s+3\n\s+blank lines\s+1\n/);
  for (const row of ["raw bytes", "compressed bytes", "compression ratio", "seconds", "entries/s"]) {
    assert.match(r.stdout, new RegExp(`${row}\\s+[\\d.,]+\\n?`));
  }
  assert.deepStrictEqual(await readStored(tc.dataDir), [{ id: 1 }, { id: 2 }, { id: 3 }]);
});

Deno.test("send --on-invalid fail: delivers what came before, names the line, exits 1", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "app.jsonl");
    await Deno.writeTextFile(file, '{"id":1}\n{"id":2}\n"str"\n{"id":4}\n');
    const r = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath, "--on-invalid", "fail", file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${file}:3: not a JSON object \\(got a string\\) \\(--on-invalid fail\\)`));
    assert.deepStrictEqual(await readStored(tc.dataDir), [{ id: 1 }, { id: 2 }]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("send verifies the server: an untrusted certificate fails at once; --insecure warns loudly", async () => {
  await using tc = await startTestCollector();
  const dir = await Deno.makeTempDir();
  try {
    // A CA that did not sign the server's certificate.
    const other = await new Deno.Command("sh", { args: [join(Deno.cwd(), "certs.sh"), dir], stdout: "null" }).output();
    assert.ok(other.success);
    const refused = await runTlslog(
      ["send", "--port", String(tc.port), "--ca", join(dir, "ca.crt"), "--retries", "3"],
      {
        stdin: '{"a":1}\n',
      },
    );
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /CertificateError: server certificate of localhost:\d+ not trusted/);
    assert.doesNotMatch(refused.stderr, /retry/);
    const insecure = await runTlslog(["send", "--port", String(tc.port), "--insecure"], { stdin: '{"a":1}\n' });
    assert.equal(insecure.code, 0, insecure.stderr);
    assert.match(insecure.stderr, /WARNING: --insecure: the collector's certificate and host name are NOT verified/);
    assert.deepStrictEqual(await readStored(tc.dataDir), [{ a: 1 }]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("healthcare --count 50: 50 entries in 5 files, no raw patient ID, tokens stable across runs", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  const keyHex = "5a".repeat(32);
  const args = ["healthcare", "--ca", caPath, "--port", String(tc.port), "--count", "50", "--seed", "7"];
  const r = await runTlslog(args, { env: { TLSLOG_ANON_KEY: keyHex } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await listDataFiles(tc.dataDir)).length, 5);
  const stored = await readStored(tc.dataDir);
  assert.equal(stored.length, 50);
  assert.equal(tc.collector.stats().entries_received, 50);
  const raw = generateConsultations(50, seededRandom(7), 0);
  const text = stored.map((e) => JSON.stringify(e)).join("\n");
  for (const log of raw) assert.ok(!text.includes(log.patient_id), `raw patient ID ${log.patient_id} leaked`);
  const p = createPseudonymizer(parseKey(keyHex));
  assert.deepStrictEqual(stored.map((e) => e.patient_id), raw.map((l) => p.token(l.patient_id)));
  assert.equal(new Set(stored.map((e) => e.department)).size, 5);
  // The built-in policy leaves nothing any of its detectors can find (the notes carry phones and e-mails).
  for (const e of stored) assert.deepStrictEqual(checkDeidentified(e, DEFAULT_POLICY.detectors), []);
  assert.match(r.stdout, /redactions\s+(phone|email) \d+/);
  assert.ok(new Set(stored.map((e) => e.event)).size >= 5);
  // A second run with the same key gives the same tokens.
  const again = await runTlslog(args, { env: { TLSLOG_ANON_KEY: keyHex } });
  assert.equal(again.code, 0);
  const second = (await readStored(tc.dataDir)).slice(50);
  assert.deepStrictEqual(second.map((e) => e.patient_id), stored.map((e) => e.patient_id));
});

Deno.test("healthcare without a key creates one (mode 0600) and says where", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  const home = await Deno.makeTempDir();
  try {
    const r = await runTlslog(["healthcare", "--ca", caPath, "--port", String(tc.port), "--count", "3"], {
      env: { XDG_CONFIG_HOME: home, TLSLOG_ANON_KEY: "" },
    });
    assert.equal(r.code, 0, r.stderr);
    const keyPath = join(home, "tlslog", "anon.key");
    assert.match(r.stderr, new RegExp(`created a new pseudonymisation key at ${keyPath} \\(mode 0600\\)`));
    assert.equal((await Deno.stat(keyPath)).mode! & 0o777, 0o600);
    assert.doesNotMatch(r.stdout + r.stderr, new RegExp((await Deno.readTextFile(keyPath)).trim()));
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("healthcheck exits 0 against a collector and 1 within 5 s when nothing listens or the CA is wrong", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  const ok = await runTlslog(["healthcheck", "--ca", caPath, "--port", String(tc.port)]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /healthy: localhost:\d+ answered the ping/);
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const freePort = (l.addr as Deno.NetAddr).port;
  l.close();
  const started = performance.now();
  const down = await runTlslog(["healthcheck", "--ca", caPath, "--port", String(freePort), "--timeout", "3s"]);
  assert.equal(down.code, 1);
  assert.ok(performance.now() - started < 5000);
  assert.match(down.stderr, /unhealthy: localhost:\d+: cannot connect/);
  const wrongCa = await runTlslog(["healthcheck", "--port", String(tc.port), "--ca", "/nonexistent/ca.crt"]);
  assert.equal(wrongCa.code, 1);
  assert.match(wrongCa.stderr, /cannot read --ca \/nonexistent\/ca.crt/);
});

Deno.test("healthcheck gives up within its timeout on a server that never completes the handshake", async () => {
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of silent) held.push(c);
  })();
  const { caPath } = await testCerts();
  const started = performance.now();
  const r = await runTlslog([
    "healthcheck",
    "--ca",
    caPath,
    "--port",
    String((silent.addr as Deno.NetAddr).port),
    "--timeout",
    "1s",
  ]);
  const elapsed = performance.now() - started;
  silent.close();
  await accepting.catch(() => {});
  for (const c of held) c.close();
  assert.equal(r.code, 1);
  assert.match(r.stderr, /unhealthy: .*(no answer within 1000 ms|no handshake within 1000 ms)/);
  assert.ok(elapsed < 5000, `took ${elapsed} ms`);
});

Deno.test("serve --print: entries on stdout, start-up line on stderr; SIGTERM exits 0 after closing files", async () => {
  const dataDir = await Deno.makeTempDir();
  const { caPath } = await testCerts();
  try {
    const server = await spawnServe(["--data-dir", dataDir, "--print", "--dashboard-port", "0"]);
    const sent = await runTlslog(["send", "--port", String(server.port), "--ca", caPath], {
      stdin: '{"n":1}\n{"n":2}\n',
    });
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(server.dashboardUrl, null);
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0);
    assert.match(server.stderr(), /listening on tls:\/\/127.0.0.1:\d+ \(protocol v1 and v2\)/);
    assert.match(server.stderr(), /SIGTERM: finishing frames in flight[\s\S]*stopped; 2 entries written to 1 files/);
    assert.equal(server.stdout(), '{"n":1}\n{"n":2}\n');
    assert.deepStrictEqual(await readStored(dataDir), [{ n: 1 }, { n: 2 }]);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("serve: the dashboard answers /api/stats on its own port, with the token only; the generated token is printed", async () => {
  const dataDir = await Deno.makeTempDir();
  const { caPath } = await testCerts();
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dashboardPort = (l.addr as Deno.NetAddr).port;
  l.close();
  try {
    const server = await spawnServe(["--data-dir", dataDir, "--dashboard-port", String(dashboardPort)]);
    assert.equal(server.dashboardUrl, `http://127.0.0.1:${dashboardPort}/`);
    const sent = await runTlslog(["send", "--port", String(server.port), "--ca", caPath], { stdin: '{"n":1}\n' });
    assert.equal(sent.code, 0);
    const token = /dashboard token (\S+) \(open /.exec(server.stderr())?.[1];
    assert.ok(token, server.stderr());
    const refused = await fetch(`${server.dashboardUrl}api/stats`);
    assert.equal(refused.status, 401);
    await refused.body?.cancel();
    const auth = { headers: { authorization: `Bearer ${token}` } };
    const stats = await (await fetch(`${server.dashboardUrl}api/stats`, auth)).json();
    const page = await (await fetch(server.dashboardUrl!, auth)).text();
    assert.equal((await server.stop("SIGINT")).code, 0);
    assert.equal(stats.tls.min_version, "TLSv1.3");
    assert.ok(stats.tls.cert_days_left > 30, JSON.stringify(stats.tls));
    assert.deepStrictEqual([stats.entries_received, stats.entries_written, stats.files_written], [1, 1, 1]);
    assert.match(page, /<title>tlslog collector<\/title>/);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("serve: a missing certificate is a clear error with exit 1", async () => {
  const r = await runTlslog(["serve", "--cert", "/nonexistent/server.crt", "--port", "0", "--dashboard-port", "0"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot read --cert \/nonexistent\/server.crt: .*run \.\/certs\.sh/);
});

Deno.test("send --policy de-identifies before sending; a bad policy is refused at start-up with its place", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  const dir = await Deno.makeTempDir();
  try {
    const policy = join(dir, "policy.json");
    await Deno.writeTextFile(
      policy,
      JSON.stringify({
        version: 1,
        pseudonymize: [{ field: "patient_id", prefix: "pt" }],
        drop: ["patient_name"],
        scan: { fields: ["message"] },
        detectors: ["ssn", "card", "email", "phone"],
      }),
    );
    const input = JSON.stringify({
      patient_id: "483920",
      patient_name: "Jane Roe",
      message: "SSN 123-45-6789, card 4111 1111 1111 1111, mail jane@example.org",
    }) + "\n";
    const keyHex = "5a".repeat(32);
    const ok = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath, "--policy", policy], {
      stdin: input,
      env: { TLSLOG_ANON_KEY: keyHex },
    });
    assert.equal(ok.code, 0, ok.stderr);
    const [stored] = await readStored(tc.dataDir);
    assert.deepStrictEqual(stored, {
      patient_id: createPseudonymizer(parseKey(keyHex)).token("483920", "pt"),
      message: "SSN [REDACTED:SSN], card [REDACTED:CARD], mail [REDACTED:EMAIL]",
    });

    await Deno.writeTextFile(policy, '{"version": 1,\n "detectors": ["ssn", "phne"]}');
    const bad = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath, "--policy", policy], {
      stdin: input,
    });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /policy\.json: detectors\[1\]: unknown detector "phne"; known: ssn, phone/);
    await Deno.writeTextFile(policy, '{"version": 1,\n "drop": [x]}');
    const broken = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath, "--policy", policy], {
      stdin: input,
    });
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /policy\.json: line 2 column \d+: invalid JSON/);
    assert.equal((await readStored(tc.dataDir)).length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report: a de-identified store passes with its key id; raw identifiers fail with file and line", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  const keyHex = "5a".repeat(32);
  const sent = await runTlslog([
    "healthcare",
    "--ca",
    caPath,
    "--port",
    String(tc.port),
    "--count",
    "60",
    "--seed",
    "3",
  ], {
    env: { TLSLOG_ANON_KEY: keyHex },
  });
  assert.equal(sent.code, 0, sent.stderr);
  const clean = await runTlslog(["report", tc.dataDir]);
  assert.equal(clean.code, 0, clean.stderr);
  const keyId = createPseudonymizer(parseKey(keyHex)).keyId;
  assert.match(
    clean.stdout,
    new RegExp(`entries checked\\s+60\\n\\s+fields pseudonymised\\s+60\\n\\s+key ids in use\\s+${keyId} 60`),
  );
  assert.match(clean.stdout, /entries with findings\s+0\n/);
  const raw = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath], {
    stdin: '{"note":"SSN 123-45-6789"}\n',
  });
  assert.equal(raw.code, 0, raw.stderr);
  const dirty = await runTlslog(["report", "--json", tc.dataDir]);
  assert.equal(dirty.code, 1);
  const report = JSON.parse(dirty.stdout);
  assert.equal(report.entries_with_violations, 1);
  assert.deepStrictEqual(report.examples.map((e: { field: string; detector: string }) => [e.field, e.detector]), [[
    "note",
    "ssn",
  ]]);
});

Deno.test("send --policy with FF1 keeps a field's shape; reidentify reverses it only with the key, and audits the run", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  const dir = await Deno.makeTempDir();
  try {
    const policy = join(dir, "policy.json");
    await Deno.writeTextFile(
      policy,
      JSON.stringify({
        version: 1,
        ff1: [{ field: "mrn", alphabet: "0123456789" }],
        scan: { fields: ["note"] },
        detectors: ["ssn"],
      }),
    );
    const key = join(dir, "ff1.key");
    await Deno.writeTextFile(key, "2b".repeat(32));
    const wrongKey = join(dir, "wrong.key");
    await Deno.writeTextFile(wrongKey, "3c".repeat(32));
    const sent = await runTlslog(
      ["send", "--port", String(tc.port), "--ca", caPath, "--policy", policy, "--ff1-key-file", key],
      { stdin: '{"mrn":"00482913","note":"ok"}\n', env: { TLSLOG_ANON_KEY: "5a".repeat(32) } },
    );
    assert.equal(sent.code, 0, sent.stderr);
    const [stored] = await readStored(tc.dataDir);
    assert.match(String(stored!.mrn), /^\d{8}$/);
    assert.notEqual(stored!.mrn, "00482913");
    const file = join(dir, "stored.jsonl");
    await Deno.writeTextFile(file, JSON.stringify(stored) + "\n");
    const audit = join(dir, "audit.jsonl");
    const back = await runTlslog([
      "reidentify",
      "--policy",
      policy,
      "--ff1-key-file",
      key,
      "--reason",
      "case 7",
      "--audit-log",
      audit,
      file,
    ]);
    assert.equal(back.code, 0, back.stderr);
    assert.deepStrictEqual(JSON.parse(back.stdout), { mrn: "00482913", note: "ok" });
    assert.match(back.stderr, /reidentify: AUDIT \{"event":"reidentify"/);
    const record = JSON.parse(await Deno.readTextFile(audit));
    assert.deepStrictEqual([record.entries, record.fields, record.reason], [1, ["mrn"], "case 7"]);
    // Another key gives other digits, never the original.
    const wrong = await runTlslog(["reidentify", "--policy", policy, "--ff1-key-file", wrongKey, file]);
    assert.notEqual(JSON.parse(wrong.stdout).mrn, "00482913");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("send --rate 2000: 3,000 entries take at least 1 s, all stored exactly once, the summary says so", async () => {
  await using tc = await startTestCollector();
  const { caPath } = await testCerts();
  const input = Array.from({ length: 3000 }, (_, i) => JSON.stringify({ id: i })).join("\n") + "\n";
  const r = await runTlslog(["send", "--port", String(tc.port), "--ca", caPath, "--rate", "2000", "-"], {
    stdin: input,
  });
  assert.equal(r.code, 0, r.stderr);
  // A burst of one batch (1,000), then 2,000 more at 2,000/s: at least 1.0 s; loose above.
  const seconds = Number(/\n\s+seconds\s+([\d.]+)\n/.exec(r.stdout)?.[1]);
  assert.ok(seconds >= 0.95 && seconds <= 4, `took ${seconds} s`);
  const waited = /\n\s+rate limit\s+2,000 entries\/s: waited ([\d.]+) s in all\n/.exec(r.stdout);
  assert.ok(waited, r.stdout);
  assert.ok(Number(waited[1]) >= 0.9, waited[0]);
  assert.match(r.stdout, /\n\s+acknowledged\s+3,000\n/);
  const ids = (await readStored(tc.dataDir)).map((e) => e.id as number);
  assert.equal(ids.length, 3000);
  assert.deepStrictEqual([...new Set(ids)].sort((a, b) => a - b), Array.from({ length: 3000 }, (_, i) => i));
});

Deno.test("send and healthcare refuse a bad --rate with exit 2 and say what is allowed", async () => {
  for (const bad of ["0", "-5", "abc", "1e3", "10000001", "", "NaN", "Infinity"]) {
    const r = await runTlslog(["send", `--rate=${bad}`], { stdin: '{"a":1}\n' });
    assert.equal(r.code, 2, `--rate ${bad}: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(
        `--rate must be a number of entries per second above 0 and at most 10,000,000 \\(e\\.g\\. 500 or 0\\.5\\), got "${bad}"`,
      ),
    );
    assert.match(r.stderr, /Run "tlslog send --help" for usage/);
  }
  const hc = await runTlslog(["healthcare", "--rate", "0", "--count", "1"]);
  assert.equal(hc.code, 2, hc.stderr);
  assert.match(hc.stderr, /--rate must be a number of entries per second above 0/);
  const help = await runTlslog(["send", "--help"]);
  assert.match(help.stdout, /--rate <entries\/s>\s+send at most this many entries per second on average/);
});
