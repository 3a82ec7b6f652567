import assert from "node:assert/strict";
import { platformMemoryProbes } from "./memory_probes.ts";

// The trimmer loads libc once and keeps it for the life of the process.
Deno.test({
  name: "platformMemoryProbes: the collector and trimmer give dead buffers back to the system",
  sanitizeResources: false,
}, () => {
  const probes = platformMemoryProbes();
  assert.ok(probes.collect, "V8 gc is reachable through node:v8 and node:vm");
  if (Deno.build.os === "linux") assert.ok(probes.trim, "glibc malloc_trim through FFI");
  let buffers: Uint8Array[] | null = [];
  // 128 MiB in 64 KiB pieces: below glibc's mmap threshold, so they come from (and stay in) the heap.
  for (let i = 0; i < 2048; i++) buffers.push(new Uint8Array(64 * 1024).fill(i & 255));
  const full = probes.rss();
  assert.equal(buffers.length, 2048);
  buffers = null;
  probes.collect!();
  probes.trim?.();
  const after = probes.rss();
  assert.ok(full - after > 64 * 1024 * 1024, `rss ${full} -> ${after}: less than 64 MiB returned`);
});
