import assert from "node:assert/strict";
import {
  type CommandSpec,
  durationFlag,
  formatHelp,
  intFlag,
  parseDuration,
  parseFlags,
  parseSize,
  UsageError,
} from "./flags.ts";

const spec: CommandSpec = {
  name: "demo-cmd",
  summary: "A command.",
  usage: "tlslog demo-cmd",
  flags: {
    port: { type: "string", default: "8443", help: "port" },
    print: { type: "boolean", help: "print" },
    timeout: { type: "string", default: "3s", help: "timeout" },
  },
};

Deno.test("parseFlags() applies defaults and reads values", () => {
  assert.deepStrictEqual(parseFlags(spec, ["--print", "--port=9000"]), {
    values: { port: "9000", print: true, timeout: "3s" },
    positionals: [],
    help: false,
  });
  assert.equal(parseFlags(spec, ["-h"]).help, true);
});

Deno.test("parseFlags() refuses unknown flags and stray arguments with a UsageError", () => {
  assert.throws(
    () => parseFlags(spec, ["--bogus"]),
    (e: unknown) => e instanceof UsageError && e.command === "demo-cmd" && /unknown flag '--bogus'/.test(e.message),
  );
  assert.throws(
    () => parseFlags(spec, ["file.txt"]),
    (e: unknown) => e instanceof UsageError && /unexpected argument/.test(e.message),
  );
});

Deno.test("intFlag() and durationFlag() check ranges and name the flag", () => {
  assert.equal(intFlag(parseFlags(spec, []), spec, "port", 1, 65535), 8443);
  assert.throws(
    () => intFlag(parseFlags(spec, ["--port", "70000"]), spec, "port", 1, 65535),
    /--port must be an integer from 1 to 65535, got "70000"/,
  );
  assert.throws(() => intFlag(parseFlags(spec, ["--port", "12ab"]), spec, "port", 1, 65535), UsageError);
  assert.equal(durationFlag(parseFlags(spec, []), spec, "timeout", 100, 60_000), 3000);
  assert.throws(
    () => durationFlag(parseFlags(spec, ["--timeout", "soon"]), spec, "timeout", 100, 60_000),
    /--timeout must be a duration/,
  );
});

Deno.test("parseSize() and parseDuration() read units", () => {
  assert.deepStrictEqual(["1024", "512KiB", "1MiB", "16m", "2G", "x", "1.5M"].map(parseSize), [
    1024,
    524288,
    1048576,
    16777216,
    2147483648,
    null,
    null,
  ]);
  assert.deepStrictEqual(["3s", "500ms", "2m", "1h", "30", "1.5s", "-1s"].map(parseDuration), [
    3000,
    500,
    120000,
    3600000,
    30000,
    1500,
    null,
  ]);
});

Deno.test("formatHelp() lists every flag with its default", () => {
  const help = formatHelp(spec);
  assert.match(help, /--port <value>\s+port \(default: 8443\)/);
  assert.match(help, /--print\s+print\n/);
  assert.match(help, /-h, --help/);
});
