/**
 * The collector's TLS policy, checked from outside with `openssl s_client`
 * and raw sockets against a real `tlslog serve`: TLS 1.3 only by default,
 * `--tls-min 1.2` with AEAD suites only, plaintext refused, mutual TLS
 * (`--client-ca`, `--allow-clients`), and certificates replaced on disk
 * without a restart.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runTlslog, spawnServe, testCerts } from "./test_support.ts";
import { tempDir, waitFor } from "./fault_support.ts";

/** Runs `openssl s_client` against the port; resolves to its exit code and output. */
async function sClient(
  port: number,
  args: string[],
  stdin = "",
  awaitRefusal = false,
): Promise<{ code: number; out: string }> {
  const child = new Deno.Command("openssl", {
    // -ign_eof: wait for the server to answer (a refusal after the handshake, TLS 1.3 client auth) after stdin ends.
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-servername",
      "localhost",
      ...(awaitRefusal ? ["-ign_eof"] : []),
      ...args,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(stdin));
  // Give the server a moment to send an alert that comes after the handshake (TLS 1.3 client auth).
  await new Promise((r) => setTimeout(r, 300));
  await writer.close();
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, out: d.decode(out.stdout) + d.decode(out.stderr) };
}

/** A second CA and its certificates, for "another CA" and for certificate replacement. */
async function otherCerts(dir: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: [join(new URL("..", import.meta.url).pathname, "certs.sh"), dir] })
    .output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return dir;
}

Deno.test("TLS policy: 1.3 only by default (1.2 refused with a protocol alert), plaintext refused", async () => {
  await using dir = await tempDir("tlslog-tls-");
  const c = await testCerts();
  const serve = await spawnServe(["--data-dir", join(dir.path, "data")]);
  try {
    const v12 = await sClient(serve.port, ["-tls1_2", "-CAfile", c.caPath]);
    assert.notEqual(v12.code, 0, v12.out);
    assert.match(v12.out, /alert protocol version/);
    const v13 = await sClient(serve.port, ["-tls1_3", "-CAfile", c.caPath]);
    assert.equal(v13.code, 0, v13.out);
    assert.match(v13.out, /Protocol\s*: TLSv1\.3/);
    assert.match(v13.out, /Verify return code: 0 \(ok\)/);
    // A plaintext client gets no answer in plaintext: the server speaks TLS or nothing.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: serve.port });
    await conn.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
    const buf = new Uint8Array(4096);
    let got = "";
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    conn.close();
    assert.doesNotMatch(got, /HTTP\/|status/);
  } finally {
    assert.equal((await serve.stop()).code, 0);
  }
  assert.match(serve.stderr(), /TLS handshake failed/);
});

Deno.test("TLS policy: --tls-min 1.2 accepts TLS 1.2 with an AEAD suite and refuses CBC suites", async () => {
  await using dir = await tempDir("tlslog-tls12-");
  const c = await testCerts();
  const serve = await spawnServe(["--data-dir", join(dir.path, "data"), "--tls-min", "1.2"]);
  try {
    const gcm = await sClient(serve.port, ["-tls1_2", "-cipher", "ECDHE+AESGCM:ECDHE+CHACHA20", "-CAfile", c.caPath]);
    assert.equal(gcm.code, 0, gcm.out);
    assert.match(gcm.out, /New, TLSv1\.2, Cipher is ECDHE-ECDSA-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)/);
    const cbc = await sClient(serve.port, [
      "-tls1_2",
      "-cipher",
      "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:AES128-SHA",
      "-CAfile",
      c.caPath,
    ]);
    assert.notEqual(cbc.code, 0, cbc.out);
    assert.match(cbc.out, /handshake failure/);
    const bad = await runTlslog(["serve", "--tls-min", "1.1", "--port", "0", "--dashboard-port", "0"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--tls-min must be one of 1\.2, 1\.3/);
  } finally {
    assert.equal((await serve.stop()).code, 0);
  }
});

Deno.test("mutual TLS: no certificate and another CA's certificate are refused; ours is accepted and named", async () => {
  await using dir = await tempDir("tlslog-mtls-");
  const c = await testCerts();
  const other = await otherCerts(join(dir.path, "other"));
  const dataDir = join(dir.path, "data");
  const serve = await spawnServe(["--data-dir", dataDir, "--client-ca", c.caPath]);
  try {
    const none = await sClient(serve.port, ["-tls1_3", "-CAfile", c.caPath], "x", true);
    // Refused: with an alert, or (rustls) a reset or close of the connection right after the handshake.
    const refusal =
      /alert (certificate required|unknown ca|bad certificate|decrypt error|certificate unknown)|errno=104|unexpected eof while reading/;
    assert.notEqual(none.code, 0, none.out);
    assert.match(none.out, refusal);
    const foreign = await sClient(
      serve.port,
      [
        "-tls1_3",
        "-CAfile",
        c.caPath,
        "-cert",
        join(other, "client.crt"),
        "-key",
        join(other, "client.key"),
      ],
      "x",
      true,
    );
    // Refused: with an alert, or (rustls, when the chain does not verify) a reset of the connection.
    assert.notEqual(foreign.code, 0, foreign.out);
    assert.match(foreign.out, refusal);
    const ours = await sClient(serve.port, [
      "-tls1_3",
      "-CAfile",
      c.caPath,
      "-cert",
      join(c.dir, "client.crt"),
      "-key",
      join(c.dir, "client.key"),
    ]);
    assert.equal(ours.code, 0, ours.out);
    assert.doesNotMatch(ours.out, /alert/);
    // tlslog send with --cert/--key stores; without them it is refused.
    const input = join(dir.path, "in.jsonl");
    await Deno.writeTextFile(input, '{"id":1}\n{"id":2}\n');
    const common = ["send", "--port", String(serve.port), "--ca", c.caPath, "--retries", "1", input];
    const sent = await runTlslog([...common, "--cert", join(c.dir, "client.crt"), "--key", join(c.dir, "client.key")]);
    assert.equal(sent.code, 0, sent.stderr);
    const refused = await runTlslog(common);
    assert.notEqual(refused.code, 0);
    const halfFlags = await runTlslog([...common, "--cert", join(c.dir, "client.crt")]);
    assert.equal(halfFlags.code, 2);
    assert.match(halfFlags.stderr, /--cert and --key go together/);
  } finally {
    assert.equal((await serve.stop()).code, 0);
  }
  // The server saw both refusals as failed handshakes.
  assert.ok((serve.stderr().match(/TLS handshake failed/g) ?? []).length >= 2, serve.stderr());
  // The client's identity is in the audit trail.
  const audit = (await Deno.readTextFile(join(dataDir, "tlslog-audit.jsonl"))).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  assert.ok(audit.some((e) => e.event === "connection" && e.client === "tlslog-client"), "no connection by name");
});

Deno.test("mutual TLS: --allow-clients refuses an identity not listed, and says why", async () => {
  await using dir = await tempDir("tlslog-allow-");
  const c = await testCerts();
  const input = join(dir.path, "in.jsonl");
  await Deno.writeTextFile(input, '{"id":1}\n');
  const sendArgs = (port: number) => [
    "send",
    "--port",
    String(port),
    "--ca",
    c.caPath,
    "--cert",
    join(c.dir, "client.crt"),
    "--key",
    join(c.dir, "client.key"),
    "--retries",
    "1",
    input,
  ];
  const denied = await spawnServe([
    "--data-dir",
    join(dir.path, "d1"),
    "--client-ca",
    c.caPath,
    "--allow-clients",
    "billing,*.clinic.example",
  ]);
  try {
    const r = await runTlslog(sendArgs(denied.port));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /client_not_allowed|not allowed to publish/);
  } finally {
    assert.equal((await denied.stop()).code, 0);
  }
  const allowed = await spawnServe([
    "--data-dir",
    join(dir.path, "d2"),
    "--client-ca",
    c.caPath,
    "--allow-clients",
    "billing,DNS:tlslog-client",
  ]);
  try {
    const r = await runTlslog(sendArgs(allowed.port));
    assert.equal(r.code, 0, r.stderr);
  } finally {
    assert.equal((await allowed.stop()).code, 0);
  }
  const noCa = await runTlslog(["serve", "--allow-clients", "x", "--port", "0", "--dashboard-port", "0"]);
  assert.equal(noCa.code, 2);
  assert.match(noCa.stderr, /--allow-clients needs --client-ca/);
});

Deno.test("certificate rotation: a replaced certificate serves the next connection; a corrupt one leaves the old in service", async () => {
  await using dir = await tempDir("tlslog-rotate-");
  const c = await testCerts();
  const live = join(dir.path, "live");
  await Deno.mkdir(live);
  for (const f of ["server.crt", "server.key"]) await Deno.copyFile(join(c.dir, f), join(live, f));
  const other = await otherCerts(join(dir.path, "other"));
  const serve = await spawnServe([
    "--data-dir",
    join(dir.path, "data"),
    "--cert",
    join(live, "server.crt"),
    "--key",
    join(live, "server.key"),
  ]);
  const verifiesWith = async (caFile: string) =>
    (await sClient(serve.port, ["-tls1_3", "-CAfile", caFile, "-verify_return_error"])).code === 0;
  try {
    assert.ok(await verifiesWith(c.caPath));
    // Open connection before the change: it keeps working after it.
    const open = await Deno.connectTls({ hostname: "localhost", port: serve.port, caCerts: [c.ca] });
    await open.handshake();
    // Replace key and certificate (written to temporary names, renamed into place, as deploy tools do).
    for (const f of ["server.key", "server.crt"]) {
      await Deno.copyFile(join(other, f), join(live, f + ".new"));
      await Deno.rename(join(live, f + ".new"), join(live, f));
    }
    await waitFor("the new certificate in service", () => verifiesWith(join(other, "ca.crt")), 10_000, 200);
    assert.equal(await verifiesWith(c.caPath), false);
    await open.write(new Uint8Array([0, 0, 0, 0]));
    open.close();
    // A corrupt certificate: the one in service stays, the failure is logged.
    await Deno.writeTextFile(join(live, "server.crt"), "-----BEGIN CERTIFICATE-----\nnot a certificate\n");
    await waitFor("the failed reload logged", () => Promise.resolve(/TLS reload failed/.test(serve.stderr())), 10_000);
    assert.ok(await verifiesWith(join(other, "ca.crt")));
    // SIGHUP reloads too: put the first certificate back.
    for (const f of ["server.key", "server.crt"]) await Deno.copyFile(join(c.dir, f), join(live, f));
    serve.child.kill("SIGHUP");
    await waitFor("the first certificate back", () => verifiesWith(c.caPath), 10_000, 200);
  } finally {
    assert.equal((await serve.stop()).code, 0);
  }
  assert.match(serve.stderr(), /keeping the certificate in service/);
});
