/**
 * Child processes of the benchmark: every one started is tracked so that it
 * is always killed, its output collected, its peak memory and CPU watched
 * through /proc.
 *
 * @module
 */

const decoder = new TextDecoder();

const live = new Set<Deno.ChildProcess>();

/** Options of {@linkcode spawnProcess}. */
export interface SpawnOptions {
  cwd?: string;
  stdout?: "piped" | "null";
  env?: Record<string, string>;
}

/** Starts `command args...` with stdin closed and stderr piped, and tracks it for {@linkcode killAll}. */
export function spawnProcess(command: string, args: string[], options: SpawnOptions = {}): Deno.ChildProcess {
  const child = new Deno.Command(command, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: options.stdout ?? "piped",
    stderr: "piped",
  }).spawn();
  live.add(child);
  child.status.finally(() => live.delete(child));
  return child;
}

/** SIGKILLs every child still running (only the ones this process started). */
export function killAll(): void {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** Collects a stream as text in the background. */
export function collect(stream: ReadableStream<Uint8Array>): { text: () => string; done: Promise<void> } {
  let text = "";
  const done = stream.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (t) => void (text += t) }),
  ).catch(() => {});
  return { text: () => text, done };
}

/** Peak memory and CPU time of a process. */
export interface Usage {
  /** Peak resident set, KiB. */
  rssKb: number;
  /** User + system CPU seconds (as of the last poll, at most 50 ms before exit). */
  cpuSeconds: number;
}

const CLK_TCK = Number(
  decoder.decode((await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output()).stdout).trim(),
) || 100;

/**
 * Watches a process: polls /proc/<pid>/status every 50 ms and keeps the
 * largest VmHWM / VmRSS seen (VmHWM is gone once the process has exited, so
 * the last poll before exit is what counts), and /proc/<pid>/stat for CPU time.
 * With `currentOnly` (for this very process, whose high-water mark covers
 * earlier work) only VmRSS counts, and CPU time is measured from the start.
 */
export class ProcWatch {
  #kb = 0;
  #ticks = 0;
  #ticksAtStart: number | null = null;
  readonly #timer: ReturnType<typeof setInterval>;
  constructor(readonly pid: number, readonly currentOnly = false) {
    this.#poll();
    this.#timer = setInterval(() => this.#poll(), 50);
  }
  #poll(): void {
    try {
      const status = Deno.readTextFileSync(`/proc/${this.pid}/status`);
      const re = this.currentOnly ? /^VmRSS:\s+(\d+) kB$/gm : /^(?:VmHWM|VmRSS):\s+(\d+) kB$/gm;
      for (const m of status.matchAll(re)) this.#kb = Math.max(this.#kb, Number(m[1]));
      const stat = Deno.readTextFileSync(`/proc/${this.pid}/stat`);
      // Fields after "(comm)": state is field 3, utime 14, stime 15.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ticks = Number(fields[11]) + Number(fields[12]);
      this.#ticksAtStart ??= ticks;
      this.#ticks = Math.max(this.#ticks, ticks);
    } catch {
      // gone
    }
  }
  /** Stops polling; returns what was seen. */
  stop(): Usage {
    if (this.currentOnly) this.#poll();
    clearInterval(this.#timer);
    const ticks = this.currentOnly ? this.#ticks - (this.#ticksAtStart ?? this.#ticks) : this.#ticks;
    return { rssKb: this.#kb, cpuSeconds: ticks / CLK_TCK };
  }
}

/** Resolves to the exit status; kills the child when it runs longer than `ms`. */
export async function statusWithin(child: Deno.ChildProcess, ms: number, what: string): Promise<Deno.CommandStatus> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, ms);
  try {
    const status = await child.status;
    if (timedOut) throw new Error(`${what} did not finish within ${ms / 1000} s and was killed`);
    return status;
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a command to completion (tracked, killed after `ms`); resolves to its exit status and output. */
export async function runToEnd(
  command: string,
  args: string[],
  ms: number,
  options: SpawnOptions = {},
): Promise<{ success: boolean; code: number; stdout: string; stderr: string }> {
  let child: Deno.ChildProcess;
  try {
    child = spawnProcess(command, args, options);
  } catch (err) {
    return { success: false, code: -1, stdout: "", stderr: (err as Error).message };
  }
  const out = options.stdout === "null" ? null : collect(child.stdout);
  const err = collect(child.stderr);
  let status: Deno.CommandStatus;
  try {
    status = await statusWithin(child, ms, `${command} ${args.join(" ")}`);
  } catch (e) {
    await Promise.all([out?.done, err.done]);
    return { success: false, code: -1, stdout: out?.text() ?? "", stderr: `${err.text()}\n${(e as Error).message}` };
  }
  await Promise.all([out?.done, err.done]);
  return { success: status.success, code: status.code, stdout: out?.text() ?? "", stderr: err.text() };
}

/** Sends SIGTERM, waits up to `ms`, then SIGKILL; resolves to the exit status. */
export async function terminate(child: Deno.ChildProcess, ms: number): Promise<Deno.CommandStatus> {
  try {
    child.kill("SIGTERM");
  } catch {
    // already gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      resolve();
    }, ms);
  });
  try {
    await Promise.race([child.status, killed]);
    return await child.status;
  } finally {
    clearTimeout(timer);
  }
}
