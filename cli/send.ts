/**
 * `tlslog send [FILE...]`: ship JSON lines from files, stdin, or a followed
 * log file, optionally through a crash-safe spool.
 *
 * @module
 */
import { resolve } from "node:path";
import { followLines, type FollowPosition } from "../client/file_follower.ts";
import {
  type EntryChunk,
  InvalidInputError,
  type InvalidLine,
  type LineChunk,
  readLineChunks,
  selectEntries,
} from "../client/line_reader.ts";
import type { Sender } from "../client/sender.ts";
import { Spool } from "../client/spool.ts";
import {
  deidentifierFromFlags,
  deidentifySummary,
  formatSummary,
  type LoadedDeidentifier,
  POLICY_FLAGS,
  reportEvents,
  SEND_FLAGS,
  senderFromFlags,
} from "./client_common.ts";
import { choiceFlag, type CommandSpec, formatHelp, parseFlags, sizeFlag, stringFlag, UsageError } from "./flags.ts";
import { listenForStop } from "./stop_signal.ts";

/** The command's flags and help. */
export const sendSpec: CommandSpec = {
  name: "send",
  summary: "Send JSON lines (one JSON object per line) to a collector over TLS.",
  usage: "tlslog send [flags] [FILE...]   (no FILE or - reads stdin)",
  positionals: true,
  flags: {
    ...SEND_FLAGS,
    "on-invalid": {
      type: "string",
      default: "skip",
      help: "a line that is not a JSON object: skip (report it and go on) or fail (stop, exit 1)",
    },
    spool: {
      type: "string",
      arg: "dir",
      help: "keep batches on disk until acknowledged, with each file's read position; a restart resends and resumes",
    },
    "spool-max-bytes": { type: "string", default: "1GiB", arg: "size", help: "spool capacity (compressed batches)" },
    "when-full": {
      type: "string",
      default: "block",
      help: "spool full: block (slow the input), drop-oldest or drop-newest (counted and reported)",
    },
    follow: { type: "boolean", help: "follow FILE like tail -F (rotation, truncation) until SIGINT/SIGTERM" },
    ...POLICY_FLAGS,
  },
  examples: [
    "tlslog send --ca certs/ca.crt app.jsonl",
    "tail -n 100 app.jsonl | tlslog send --host collector.example --ca ca.crt -",
    "tlslog send --follow --spool /var/lib/tlslog/spool /var/log/app.jsonl",
    "tlslog send --rate 1000 backlog.jsonl",
    "tlslog send --policy shared/privacy_policy_default.json --anon-key-file anon.key visits.jsonl",
  ],
};

/** One chunk of input with where reading stands after it (for the spool). */
interface InputChunk {
  chunk: LineChunk;
  meta?: Record<string, string>;
}

/** Where a file's reading resumes, as the spool keeps it. */
interface FilePosition {
  offset: number;
  line: number;
}

async function* readFiles(
  paths: string[],
  spool: Spool | undefined,
  warn: (m: string) => void,
): AsyncGenerator<InputChunk> {
  for (const path of paths.length === 0 ? ["-"] : paths) {
    if (path === "-") {
      for await (const chunk of readLineChunks(Deno.stdin.readable, "<stdin>")) yield { chunk };
      continue;
    }
    const key = `input:${resolve(path)}`;
    const saved = spool?.getMeta(key);
    let start: FilePosition = saved ? JSON.parse(saved) : { offset: 0, line: 1 };
    const file = await Deno.open(path).catch((err: Error) => {
      throw new InvalidInputError({ source: path, line: 0, reason: `cannot open: ${err.message}` });
    });
    const { size } = await file.stat();
    if (start.offset > size) {
      warn(`send: ${path} is shorter than when last read (${size} < ${start.offset} bytes): reading it from the start`);
      start = { offset: 0, line: 1 };
    } else if (start.offset > 0) {
      warn(`send: ${path}: resuming at byte ${start.offset} (line ${start.line}) from the spool`);
      await file.seek(start.offset, Deno.SeekMode.Start);
    }
    for await (const chunk of readLineChunks(file.readable, path, { offset: start.offset, firstLine: start.line })) {
      const next: FilePosition = { offset: chunk.endOffset, line: chunk.firstLine + chunk.lines.length };
      yield { chunk, meta: spool ? { [key]: JSON.stringify(next) } : undefined };
    }
  }
}

async function* followFile(
  path: string,
  spool: Spool | undefined,
  signal: AbortSignal,
  notice: (m: string) => void,
): AsyncGenerator<InputChunk> {
  const key = `follow:${resolve(path)}`;
  const saved = spool?.getMeta(key);
  const startAt: FollowPosition | undefined = saved ? JSON.parse(saved) : undefined;
  for await (const c of followLines(path, { startAt, signal, onNotice: (m) => notice(`send: ${m}`) })) {
    yield {
      chunk: { source: c.source, firstLine: c.firstLine, lines: c.lines, endOffset: c.position.offset },
      meta: spool ? { [key]: JSON.stringify(c.position) } : undefined,
    };
  }
}

/** Runs `tlslog send`; resolves to the exit code. */
export async function runSend(args: string[]): Promise<number> {
  const flags = parseFlags(sendSpec, args);
  if (flags.help) {
    console.log(formatHelp(sendSpec));
    return 0;
  }
  const onInvalidMode = choiceFlag(flags, sendSpec, "on-invalid", ["skip", "fail"] as const);
  const whenFull = choiceFlag(flags, sendSpec, "when-full", ["block", "drop-oldest", "drop-newest"] as const);
  const spoolMaxBytes = sizeFlag(flags, sendSpec, "spool-max-bytes", 64 * 1024, 1024 ** 5);
  const follow = flags.values.follow === true;
  if (follow && (flags.positionals.length !== 1 || flags.positionals[0] === "-")) {
    throw new UsageError("--follow needs exactly one FILE (not stdin)", "send");
  }
  const spoolDir = stringFlag(flags, "spool");
  // De-identification happens here, before compression and before anything is spooled or sent.
  const deid = await deidentifierFromFlags(flags, "send");
  const spool = spoolDir ? Spool.open(spoolDir) : undefined;
  const stop = listenForStop();
  try {
    const events = reportEvents("send");
    const sender = senderFromFlags(flags, sendSpec, events.onEvent, (m) => console.error(m), {
      spool,
      spoolMaxBytes,
      whenFull,
      // A stop ends rate-limit waits: what was read is delivered without further delay.
      signal: stop.signal,
    });
    events.track(sender);
    if (spool && spool.stats.batches > 0) {
      console.error(`send: spool ${spoolDir} holds ${spool.stats.entries} unacknowledged entries: sending them first`);
    }
    const input = follow
      ? followFile(flags.positionals[0]!, spool, stop.signal, (m) => console.error(m))
      : readFiles(flags.positionals, spool, (m) => console.error(m));
    return await deliver(sender, input, onInvalidMode, events, stop.signal, deid);
  } finally {
    stop.dispose();
    spool?.close();
  }
}

async function deliver(
  sender: Sender,
  input: AsyncGenerator<InputChunk>,
  onInvalidMode: "skip" | "fail",
  events: ReturnType<typeof reportEvents>,
  stopped: AbortSignal,
  deid: LoadedDeidentifier | undefined,
): Promise<number> {
  const invalid: InvalidLine[] = [];
  let blank = 0;
  const onInvalid = (line: InvalidLine): "stop" | void => {
    if (onInvalidMode === "fail") return "stop";
    invalid.push(line);
    console.error(`send: ${line.source}:${line.line}: skipped: ${line.reason}`);
  };
  const started = performance.now();
  const summaryRows = (): [string, string | number][] => [
    [
      "invalid lines skipped",
      invalid.length + sender.summary.rejected.filter((r) => r.code === "invalid_entry").length,
    ],
    ["blank lines", blank],
    ...(deid ? deidentifySummary(deid) : []),
  ];
  let inputError: Error | null = null;
  try {
    for await (const { chunk, meta } of input) {
      // A policy needs each entry parsed anyway: check them fully then.
      const validation = onInvalidMode === "fail" || deid ? "full" : "shape";
      const selected: EntryChunk = selectEntries(chunk, onInvalid, validation);
      if (deid) {
        selected.entries = selected.entries.map((e) => JSON.stringify(deid.deidentifier.apply(JSON.parse(e))));
      }
      blank += selected.blank;
      // Past a bad line the read position is not advanced: a rerun starts at that chunk again.
      await sender.addChunk(selected.entries, selected.source, selected.lineNos, selected.stoppedAt ? undefined : meta);
      if (selected.stoppedAt) throw new InvalidInputError(selected.stoppedAt);
      if (stopped.aborted) break;
    }
  } catch (err) {
    events.stop();
    if (!(err instanceof InvalidInputError)) {
      if (sender.summary.entries > 0) console.log(formatSummary(sender.summary, (performance.now() - started) / 1000));
      throw err;
    }
    inputError = err;
  }
  let failure: unknown = null;
  try {
    // Entries read before a bad line, or before a stop signal, are still delivered.
    await sender.finish();
  } catch (err) {
    failure = err;
  } finally {
    events.stop();
  }
  console.log(formatSummary(sender.summary, (performance.now() - started) / 1000, summaryRows()));
  if (failure) throw failure;
  if (inputError) {
    console.error(`send: ${inputError.message} (--on-invalid fail)`);
    return 1;
  }
  const s = sender.summary;
  // In skip mode a line the collector found not to be a JSON object is a skipped line, as if found here.
  const failed = s.rejected.filter((r) => r.code !== "invalid_entry").length;
  const skippedByCollector = s.rejected.length - failed;
  return failed === 0 && s.dropped === 0 && s.acknowledged + skippedByCollector === s.entries ? 0 : 1;
}
