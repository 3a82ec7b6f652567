/**
 * The real probes for the memory governor: the resident set from Deno, a full
 * V8 collection (V8's `gc`, exposed at run time through `node:v8` and
 * `node:vm`), and glibc's `malloc_trim` through FFI. Each is null where the
 * platform does not have it (no glibc, no FFI permission); the governor then
 * only measures, or only collects.
 *
 * @module
 */
import v8 from "node:v8";
import vm from "node:vm";
import type { MemoryProbes } from "./memory_governor.ts";

let cached: MemoryProbes | null = null;

/** The probes of this process, found once. */
export function platformMemoryProbes(): MemoryProbes {
  cached ??= {
    rss: () => Deno.memoryUsage().rss,
    collect: findCollector(),
    trim: findTrimmer(),
    now: () => performance.now(),
  };
  return cached;
}

function findCollector(): (() => void) | null {
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc");
    return typeof gc === "function" ? () => gc() : null;
  } catch {
    return null;
  }
}

function findTrimmer(): (() => void) | null {
  if (Deno.build.os !== "linux" || Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
  // Opened on first use, and kept for the life of the process: a collector that never goes over its target
  // never loads it.
  let trim: (() => void) | null | undefined;
  return () => {
    if (trim === undefined) {
      try {
        const libc = Deno.dlopen("libc.so.6", { malloc_trim: { parameters: ["usize"], result: "i32" } });
        trim = () => void libc.symbols.malloc_trim(0n);
      } catch {
        // Not glibc (musl): nothing to trim with.
        trim = null;
      }
    }
    trim?.();
  };
}
