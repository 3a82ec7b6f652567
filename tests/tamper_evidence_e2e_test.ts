/**
 * Tamper evidence as a user meets it: `tlslog serve` child processes with
 * compression, encryption at rest, retention and an off-host checkpoint copy,
 * fed by `tlslog send` over real TLS, then checked with `tlslog verify` and
 * read back with `tlslog cat`. Damage is made by hand on the files the
 * collector wrote.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { freePort, tempDir } from "./fault_support.ts";
import { type RunResult, runTlslog, type ServeProcess, spawnServe, testCerts } from "./test_support.ts";

const AUDIT = "tlslog-audit.jsonl";
const DATA_FILE = /^tlslog-\d{8,}\.jsonl(\.gz)?(\.enc)?$/;
/** Every file an encrypting collector may leave in its data directory. */
const STORE_NAME =
  /^(tlslog-\d{8,}\.(jsonl(\.gz)?\.enc|chain(\.gz)?)|tlslog-(audit\.jsonl|checkpoints\.log|commits\.log|checkpoint\.pub))$/;

const toHex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** A fresh 32-byte at-rest key written as hex (mode 0600), with its hex and documented key id. */
async function makeKey(path: string): Promise<{ path: string; hex: string; base64: string; id: string }> {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const hex = toHex(raw);
  await Deno.writeTextFile(path, hex + "\n", { mode: 0o600 });
  await Deno.chmod(path, 0o600);
  // Key id (sealed_file.ts): the first 8 bytes of HMAC-SHA256(key, "tlslog key id").
  const hmac = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", hmac, new TextEncoder().encode("tlslog key id")));
  return { path, hex, base64: btoa(String.fromCharCode(...raw)), id: toHex(mac.subarray(0, 8)) };
}

/** Writes `count` JSON lines with ids from `first`, each with a timestamp and a unique marker; returns the lines. */
async function writeInput(path: string, count: number, first = 0): Promise<string[]> {
  const lines = Array.from({ length: count }, (_, k) => {
    const id = first + k;
    return JSON.stringify({
      id,
      timestamp: new Date(Date.UTC(2026, 10, 22, 9, 0, 0) + id * 1000).toISOString(),
      event: "lab_result",
      note: `plaintext-marker-${id.toString().padStart(6, "0")}-${toHex(crypto.getRandomValues(new Uint8Array(6)))}`,
    });
  });
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  return lines;
}

/** `tlslog send FILE` to a served collector; asserts it delivered everything. */
async function send(server: ServeProcess, file: string, extra: string[] = []): Promise<RunResult> {
  const { caPath } = await testCerts();
  const r = await runTlslog(["send", "--port", String(server.port), "--ca", caPath, ...extra, file]);
  assert.equal(r.code, 0, `send failed: ${r.stderr}`);
  return r;
}

/** Stops a collector with `signal` and asserts a clean exit (SIGTERM) or the kill (SIGKILL). */
async function stop(server: ServeProcess, signal: Deno.Signal = "SIGTERM"): Promise<void> {
  const status = await server.stop(signal);
  if (signal === "SIGKILL") assert.equal(status.signal, "SIGKILL");
  else assert.equal(status.code, 0, `serve exited ${status.code}: ${server.stderr()}`);
}

/** Names in `dir`, sorted. */
async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** Copies the regular files of `from` into a new directory `to`. */
async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { mode: 0o700 });
  for await (const e of Deno.readDir(from)) {
    assert.ok(e.isFile, `unexpected non-file ${e.name} in ${from}`);
    await Deno.copyFile(join(from, e.name), join(to, e.name));
  }
}

/** The DAMAGE lines of a verify report. */
const damageLines = (r: RunResult) => r.stdout.split("\n").filter((l) => l.startsWith("DAMAGE "));

/** The verify --json report. */
interface VerifyJson {
  ok: boolean;
  entries: number;
  lastSeq: number;
  files: number;
  prunedThrough: number;
  checkpoints: number;
  auditEvents: number;
  damage: { kind: string; file: string; line?: number; message: string }[];
}

Deno.test("serve with compression, encryption and retention: verify passes and cat returns what was sent", async () => {
  await using tmp = await tempDir("tlslog-te-");
  const key = await makeKey(join(tmp.path, "at-rest.key"));
  const input = join(tmp.path, "input.jsonl");
  const lines = await writeInput(input, 300);
  const signingKey = join(tmp.path, "ck.key");
  const pubkey = join(tmp.path, "ck.pub");

  /** Serves into a fresh data dir, sends the input, stops; returns the data and copy directories. */
  const serveAndSend = async (name: string, extra: string[]) => {
    const dataDir = join(tmp.path, name);
    const copy = join(tmp.path, `${name}-anchor`);
    const server = await spawnServe([
      "--data-dir",
      dataDir,
      "--encrypt-key",
      key.path,
      "--checkpoint-copy",
      copy,
      "--rotate-entries",
      "10",
      "--signing-key",
      signingKey,
      ...extra,
    ]);
    try {
      const sent = await send(server, input);
      assert.match(sent.stdout, /acknowledged\s+300\n/);
    } finally {
      await stop(server);
    }
    return { dataDir, copy };
  };

  // With retention: only the newest files are kept.
  const { dataDir, copy } = await serveAndSend("data", ["--retention-files", "5"]);
  const stored = await names(dataDir);
  // Nothing but sealed data files, chain files and the collector's own logs: no plaintext copy, no leftover.
  for (const n of stored) assert.match(n, STORE_NAME, `unexpected file ${n} in the data directory`);
  const dataFiles = stored.filter((n) => DATA_FILE.test(n));
  assert.equal(dataFiles.length, 5, `data files kept: ${dataFiles.join(", ")}`);
  for (const n of dataFiles) assert.match(n, /\.jsonl(\.gz)?\.enc$/, `${n} is not encrypted`);
  assert.ok(dataFiles.some((n) => n.endsWith(".jsonl.gz.enc")), `no closed file was compressed: ${dataFiles}`);
  const magic = new TextEncoder().encode("TLSLOGE1");
  // No entry's plaintext in any file of the store (data, chain, checkpoints, audit).
  for (const n of stored) {
    const raw = await Deno.readFile(join(dataDir, n));
    if (DATA_FILE.test(n)) assert.deepStrictEqual(raw.subarray(0, 8), magic, `${n} has no sealed-file header`);
    const text = new TextDecoder("latin1").decode(raw);
    for (const line of lines) {
      const marker = (JSON.parse(line) as { note: string }).note;
      assert.ok(!text.includes(marker), `${n} holds the plaintext of ${line}`);
    }
  }
  assert.ok((await Deno.stat(join(copy, "checkpoint"))).isFile);
  assert.ok((await Deno.stat(pubkey)).isFile);

  const verifyArgs = (dir: string, anchor: string) => [
    "verify",
    dir,
    "--pubkey",
    pubkey,
    "--trusted-checkpoint",
    join(anchor, "checkpoint"),
    "--encrypt-key",
    key.path,
  ];
  const verified = await runTlslog(verifyArgs(dataDir, copy));
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  const json = await runTlslog([...verifyArgs(dataDir, copy), "--json"]);
  assert.equal(json.code, 0, json.stdout + json.stderr);
  const report = JSON.parse(json.stdout) as VerifyJson;
  const pruned = report.prunedThrough;
  // Five files of ten kept (the one still open at the stop counts): at least entries 1..250 are gone.
  assert.ok(pruned % 10 === 0 && pruned >= 250 && pruned < 300, `prunedThrough ${pruned}`);
  assert.deepStrictEqual([report.ok, report.lastSeq, report.entries, report.files], [
    true,
    300,
    300 - pruned,
    dataFiles.length,
  ]);
  assert.match(
    verified.stdout,
    new RegExp(
      `^OK: .*: entries ${pruned + 1}\\.\\.300 in ${dataFiles.length} data files ` +
        `\\(entries 1\\.\\.${pruned} deleted by retention, as signed\\)`,
      "m",
    ),
  );
  assert.deepStrictEqual(damageLines(verified), []);

  const cat = await runTlslog(["cat", dataDir, "--encrypt-key", key.path]);
  assert.equal(cat.code, 0, cat.stderr);
  assert.equal(cat.stdout, lines.slice(pruned).map((l) => l + "\n").join(""));

  // Without retention, cat gives back the input file byte for byte.
  const full = await serveAndSend("full", []);
  const fullVerify = await runTlslog(verifyArgs(full.dataDir, full.copy));
  assert.equal(fullVerify.code, 0, fullVerify.stdout + fullVerify.stderr);
  assert.match(fullVerify.stdout, /^OK: .*: entries 1\.\.300 in 30 data files;/m);
  const fullCat = await runTlslog(["cat", full.dataDir, "--encrypt-key", key.path]);
  assert.equal(fullCat.code, 0, fullCat.stderr);
  assert.equal(fullCat.stdout, await Deno.readTextFile(input));
});

Deno.test("cat and verify refuse a wrong or missing key with a clear error", async () => {
  await using tmp = await tempDir("tlslog-te-");
  const key = await makeKey(join(tmp.path, "right.key"));
  const wrong = await makeKey(join(tmp.path, "wrong.key"));
  const input = join(tmp.path, "input.jsonl");
  await writeInput(input, 35);
  const dataDir = join(tmp.path, "data");
  const server = await spawnServe([
    "--data-dir",
    dataDir,
    "--encrypt-key",
    key.path,
    "--rotate-entries",
    "10",
    "--signing-key",
    join(tmp.path, "ck.key"),
  ]);
  try {
    await send(server, input);
  } finally {
    await stop(server);
  }
  const pubkey = join(tmp.path, "ck.pub");
  // The id the files carry is the one of the key they were sealed with.
  const sealed = (await names(dataDir)).find((n) => n.endsWith(".enc"))!;
  assert.equal(toHex((await Deno.readFile(join(dataDir, sealed))).subarray(8, 16)), key.id);
  const secrets = [key, wrong].flatMap((k) => [k.hex, k.hex.toUpperCase(), k.base64]);

  const ok = await runTlslog(["cat", dataDir, "--encrypt-key", key.path]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, await Deno.readTextFile(input));

  for (const args of [["cat", dataDir], ["verify", dataDir, "--pubkey", pubkey]]) {
    const withWrong = await runTlslog([...args, "--encrypt-key", wrong.path]);
    assert.equal(withWrong.code, 1, `${args[0]} with the wrong key: ${withWrong.stdout}${withWrong.stderr}`);
    assert.match(
      withWrong.stderr,
      new RegExp(`tlslog ${args[0]}: EncryptionKeyError: .*encrypted with key ${key.id}; the key given is ${wrong.id}`),
    );
    const without = await runTlslog(args);
    assert.equal(without.code, 1, `${args[0]} without a key: ${without.stdout}${without.stderr}`);
    assert.match(
      without.stderr,
      new RegExp(`tlslog ${args[0]}: EncryptionKeyError: .*encrypted \\(key ${key.id}\\); pass --encrypt-key`),
    );
    for (const r of [withWrong, without]) {
      assert.doesNotMatch(r.stdout, /^OK:/m);
      assert.doesNotMatch(r.stdout, /plaintext-marker/);
      for (const s of secrets) assert.ok(!(r.stdout + r.stderr).includes(s), `${args[0]} printed key material`);
    }
  }
});

Deno.test("verify names damage in a served store: a flipped ciphertext byte, then a rollback", async () => {
  await using tmp = await tempDir("tlslog-te-");
  const key = await makeKey(join(tmp.path, "at-rest.key"));
  const pubkey = join(tmp.path, "ck.pub");
  const dataDir = join(tmp.path, "data");
  const copy = join(tmp.path, "anchor");
  const serveArgs = [
    "--data-dir",
    dataDir,
    "--encrypt-key",
    key.path,
    "--checkpoint-copy",
    copy,
    "--rotate-entries",
    "10",
    "--signing-key",
    join(tmp.path, "ck.key"),
  ];
  const first = join(tmp.path, "first.jsonl");
  await writeInput(first, 45);
  let server = await spawnServe(serveArgs);
  try {
    await send(server, first);
  } finally {
    await stop(server);
  }
  const verify = (dir: string) =>
    runTlslog([
      "verify",
      dir,
      "--pubkey",
      pubkey,
      "--trusted-checkpoint",
      join(copy, "checkpoint"),
      "--encrypt-key",
      key.path,
    ]);
  const clean = await verify(dataDir);
  assert.equal(clean.code, 0, clean.stdout + clean.stderr);
  assert.match(clean.stdout, /^OK: .*: entries 1\.\.45 in 5 data files;/m);

  // One bit of ciphertext in a closed, compressed and encrypted file.
  const victim = (await names(dataDir)).filter((n) => n.endsWith(".jsonl.gz.enc"))[1]!;
  assert.ok(victim, "no compressed, encrypted file to damage");
  const path = join(dataDir, victim);
  const original = await Deno.readFile(path);
  // 48 header bytes, a 4-byte record length, then ciphertext || tag.
  const at = 48 + 4 + 5;
  assert.ok(original.length > at + 16, `${victim} is only ${original.length} bytes`);
  const damaged = original.slice();
  damaged[at]! ^= 0x01;
  await Deno.writeFile(path, damaged);
  const flipped = await verify(dataDir);
  assert.equal(flipped.code, 1, flipped.stdout + flipped.stderr);
  assert.deepStrictEqual(damageLines(flipped), [
    `DAMAGE ${victim}: unreadable_file: ${victim}: record 0 at byte 48 failed authentication: the file was altered`,
  ]);
  assert.match(flipped.stdout, /^FAILED: .*; 1 problem$/m);
  await Deno.writeFile(path, original);
  const restored = await verify(dataDir);
  assert.equal(restored.code, 0, restored.stdout + restored.stderr);

  // A rollback: the directory as it was, after the collector went on (and the anchor with it).
  const old = join(tmp.path, "data-old");
  await copyDir(dataDir, old);
  const second = join(tmp.path, "second.jsonl");
  await writeInput(second, 30, 45);
  server = await spawnServe(serveArgs);
  try {
    await send(server, second);
  } finally {
    await stop(server);
  }
  const current = await verify(dataDir);
  assert.equal(current.code, 0, current.stdout + current.stderr);
  assert.match(current.stdout, /^OK: .*: entries 1\.\.75 in 8 data files;/m);
  // The old copy is consistent in itself...
  const oldAlone = await runTlslog(["verify", old, "--pubkey", pubkey, "--encrypt-key", key.path]);
  assert.equal(oldAlone.code, 0, oldAlone.stdout + oldAlone.stderr);
  // ...but not against the newer anchor.
  const rolledBack = await verify(old);
  assert.equal(rolledBack.code, 1, rolledBack.stdout + rolledBack.stderr);
  const damage = damageLines(rolledBack);
  assert.equal(damage.length, 1, rolledBack.stdout);
  assert.match(
    damage[0]!,
    /^DAMAGE tlslog-checkpoints\.log:\d+: rollback: .*covers 45 entries.*older than the trusted checkpoint's 75/,
  );
});

Deno.test("the audit log records the events and verifies; an edited line is named", async () => {
  await using tmp = await tempDir("tlslog-te-");
  const key = await makeKey(join(tmp.path, "at-rest.key"));
  const signingKey = join(tmp.path, "ck.key");
  const pubkey = join(tmp.path, "ck.pub");
  const dataDir = join(tmp.path, "data");
  const input = join(tmp.path, "input.jsonl");
  const lines = await writeInput(input, 60);
  // One line only the collector finds invalid (a trailing comma), in the middle.
  lines.splice(30, 0, '{"id":"bad",}');
  await Deno.writeTextFile(input, lines.join("\n") + "\n");
  const dashboardPort = freePort();
  const server = await spawnServe([
    "--data-dir",
    dataDir,
    "--encrypt-key",
    key.path,
    "--rotate-entries",
    "10",
    "--retention-files",
    "3",
    "--signing-key",
    signingKey,
    "--dashboard-port",
    String(dashboardPort),
  ]);
  let stats: Record<string, unknown>;
  try {
    assert.equal(server.dashboardUrl, `http://127.0.0.1:${dashboardPort}/`);
    const sent = await send(server, input);
    assert.match(sent.stderr, /input\.jsonl:31: skipped \(found by the collector\)/);
    // A client that does not trust the server's certificate: the handshake fails on both sides.
    await assert.rejects(
      Deno.connectTls({ hostname: "localhost", port: server.port, caCerts: [] }).then(async (c) => {
        try {
          await c.handshake();
        } finally {
          c.close();
        }
      }),
    );
    const token = /dashboard token (\S+) \(open /.exec(server.stderr())?.[1];
    assert.ok(token, "serve printed no dashboard token");
    const auth = { headers: { authorization: `Bearer ${token}` } };
    const page = await fetch(server.dashboardUrl!, auth);
    assert.equal(page.status, 200);
    await page.body?.cancel();
    const api = await fetch(`${server.dashboardUrl}api/stats`, auth);
    assert.equal(api.status, 200);
    stats = await api.json();
  } finally {
    await stop(server);
  }
  assert.equal(stats.entries_written, 60);

  const text = await Deno.readTextFile(join(dataDir, AUDIT));
  for (const secret of [key.hex, key.hex.toUpperCase(), key.base64]) {
    assert.ok(!text.includes(secret), "the audit log holds the encryption key");
  }
  const signingPem = (await Deno.readTextFile(signingKey)).replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  assert.ok(signingPem.length > 0 && !text.includes(signingPem), "the audit log holds the signing key");
  const events = text.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepStrictEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
  const of = (name: string) => events.filter((e) => e.event === name);
  const [start] = of("start");
  assert.ok(start, "no start event");
  assert.equal(events[0], start);
  assert.equal(start.fsync, "batch");
  assert.equal(start.rotate_entries, 10);
  assert.deepStrictEqual(start.encryption, { cipher: "AES-256-GCM", key_id: key.id });
  assert.deepStrictEqual(start.retention, { days: null, files: 3 });
  assert.deepStrictEqual(of("listening").map((e) => e.port), [server.port]);
  const connections = of("connection");
  assert.ok(connections.length >= 1);
  for (const c of connections) {
    assert.match(String(c.peer), /^(::ffff:)?127\.0\.0\.1:\d+$/);
    assert.equal(c.tls, "TLSv1.3");
  }
  assert.ok(connections.some((c) => c.protocol === "tlslog/2"), JSON.stringify(connections));
  const refusals = of("refusal");
  assert.ok(refusals.some((r) => r.what === "entry" && r.reason === "invalid_entry"), JSON.stringify(refusals));
  assert.ok(refusals.some((r) => r.what === "connection" && r.reason === "tls_handshake"), JSON.stringify(refusals));
  assert.deepStrictEqual(
    of("rotation").map((e) => e.file),
    Array.from({ length: 6 }, (_, i) => `tlslog-${String(i + 1).padStart(8, "0")}.jsonl.enc`),
  );
  const checkpoints = of("checkpoint");
  assert.ok(checkpoints.some((c) => c.reason === "start"));
  assert.ok(checkpoints.some((c) => c.reason === "rotation"));
  assert.ok(checkpoints.some((c) => c.reason === "retention"));
  assert.deepStrictEqual(events.at(-1), { ...checkpoints.at(-1), event: "checkpoint", reason: "stop", size: 60 });
  const deletes = of("retention_delete");
  assert.ok(deletes.length >= 1);
  assert.equal(deletes.at(-1)!.throughSeq, 30);
  const deleted = deletes.flatMap((d) => d.files as string[]);
  for (let i = 1; i <= 3; i++) {
    assert.ok(deleted.some((n) => new RegExp(`^tlslog-0000000${i}\\.jsonl`).test(n)), JSON.stringify(deletes));
  }
  const access = of("dashboard_access");
  assert.deepStrictEqual(access.map((a) => [a.method, a.path, a.status]), [["GET", "/", 200], [
    "GET",
    "/api/stats",
    200,
  ]]);
  assert.match(String(access[1]!.remote), /^127\.0\.0\.1:\d+$/);
  const [stopEvent] = of("stop");
  assert.equal(stopEvent?.entries, 60);

  const verify = () => runTlslog(["verify", dataDir, "--pubkey", pubkey, "--encrypt-key", key.path]);
  const ok = await verify();
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, new RegExp(`^OK: .*; audit log ${events.length} events$`, "m"));

  // Edit a field of one line in the middle (same length, still valid JSON).
  const target = events.findIndex((e) => e.event === "listening");
  assert.ok(target >= 0 && target < events.length - 1);
  const auditLines = text.split("\n");
  const edited = auditLines[target]!.replace('"host":"127.0.0.1"', '"host":"127.0.0.2"');
  assert.notEqual(edited, auditLines[target]);
  auditLines[target] = edited;
  await Deno.writeTextFile(join(dataDir, AUDIT), auditLines.join("\n"));
  const bad = await verify();
  assert.equal(bad.code, 1, bad.stdout + bad.stderr);
  assert.deepStrictEqual(damageLines(bad).map((l) => l.split(": ").slice(0, 2).join(": ")), [
    `DAMAGE ${AUDIT}:${target + 1}: audit_damage`,
  ]);
});

Deno.test("a restart continues the chain: SIGTERM, then SIGKILL, then a clean stop", async () => {
  await using tmp = await tempDir("tlslog-te-");
  const dataDir = join(tmp.path, "data");
  const signingKey = join(tmp.path, "ck.key");
  const serveArgs = ["--data-dir", dataDir, "--rotate-entries", "10", "--signing-key", signingKey];
  const first = join(tmp.path, "first.jsonl");
  const second = join(tmp.path, "second.jsonl");
  const lines = [...await writeInput(first, 50), ...await writeInput(second, 50, 50)];

  let server = await spawnServe(serveArgs);
  try {
    await send(server, first);
  } finally {
    await stop(server);
  }
  server = await spawnServe(serveArgs);
  try {
    await send(server, second);
  } finally {
    await stop(server, "SIGKILL");
  }
  // The third start recovers from the kill and answers before it is stopped. (It is not stopped at the very
  // moment it prints its start line: serve installs its SIGTERM handler only after that line.)
  server = await spawnServe(serveArgs);
  try {
    const { caPath } = await testCerts();
    const health = await runTlslog(["healthcheck", "--port", String(server.port), "--ca", caPath]);
    assert.equal(health.code, 0, health.stderr);
  } finally {
    await stop(server);
  }

  const verified = await runTlslog(["verify", dataDir, "--pubkey", join(tmp.path, "ck.pub")]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, /^OK: .*: entries 1\.\.100 in 10 data files;/m);
  assert.deepStrictEqual(damageLines(verified), []);
  const cat = await runTlslog(["cat", dataDir]);
  assert.equal(cat.code, 0, cat.stderr);
  assert.equal(cat.stdout, lines.map((l) => l + "\n").join(""));
  const starts = (await Deno.readTextFile(join(dataDir, AUDIT))).trimEnd().split("\n")
    .filter((l) => JSON.parse(l).event === "start");
  assert.equal(starts.length, 3);
});
