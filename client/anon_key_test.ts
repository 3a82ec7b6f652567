import assert from "node:assert/strict";
import { join } from "node:path";
import { AnonKeyError, defaultKeyPath, loadAnonKey } from "./anon_key.ts";

Deno.test("loadAnonKey() creates a 0600 key once and reuses it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "sub", "anon.key");
    const first = loadAnonKey(undefined, undefined, path);
    assert.equal(first.createdPath, path);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const second = loadAnonKey(undefined, undefined, path);
    assert.deepStrictEqual(second, { key: first.key, origin: `file ${path}` });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadAnonKey() prefers the key file, then the variable, and explains bad keys", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "k");
    await Deno.writeTextFile(file, "11".repeat(32));
    const never = join(dir, "never");
    assert.deepStrictEqual(loadAnonKey(file, "22".repeat(32), never).key, new Uint8Array(32).fill(0x11));
    assert.deepStrictEqual(loadAnonKey(undefined, "22".repeat(32), never).key, new Uint8Array(32).fill(0x22));
    assert.throws(
      () => loadAnonKey(undefined, "abcd", never),
      (e: unknown) => e instanceof AnonKeyError && /TLSLOG_ANON_KEY: .*at least 16/.test(e.message),
    );
    assert.throws(() => loadAnonKey(join(dir, "missing"), undefined, never), AnonKeyError);
    await assert.rejects(Deno.stat(never), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("defaultKeyPath() follows XDG_CONFIG_HOME, then HOME", () => {
  const env = (vars: Record<string, string>) => ({ get: (n: string) => vars[n] });
  assert.equal(defaultKeyPath(env({ XDG_CONFIG_HOME: "/x", HOME: "/h" })), "/x/tlslog/anon.key");
  assert.equal(defaultKeyPath(env({ HOME: "/h" })), "/h/.config/tlslog/anon.key");
});
