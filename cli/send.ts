/**
 * `tlslog send [FILE...]`: ship JSON lines from files or stdin.
 *
 * @module
 */
import { InvalidInputError, type InvalidLine, readLineChunks, selectEntries } from "../client/line_reader.ts";
import { formatSummary, reportEvents, SEND_FLAGS, senderFromFlags } from "./client_common.ts";
import { choiceFlag, type CommandSpec, formatHelp, parseFlags } from "./flags.ts";

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
  },
  examples: [
    "tlslog send --ca certs/ca.crt app.jsonl",
    "tail -n 100 app.jsonl | tlslog send --host collector.example --ca ca.crt -",
  ],
};

async function* openInputs(paths: string[]): AsyncGenerator<{ name: string; stream: ReadableStream<Uint8Array> }> {
  for (const path of paths.length === 0 ? ["-"] : paths) {
    if (path === "-") {
      yield { name: "<stdin>", stream: Deno.stdin.readable };
    } else {
      const file = await Deno.open(path).catch((err: Error) => {
        throw new InvalidInputError({ source: path, line: 0, reason: `cannot open: ${err.message}` });
      });
      yield { name: path, stream: file.readable };
    }
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
  const events = reportEvents("send");
  const sender = senderFromFlags(flags, sendSpec, events.onEvent, (m) => console.error(m));
  events.track(sender);
  const invalid: InvalidLine[] = [];
  let blank = 0;
  const onInvalid = (line: InvalidLine): "stop" | void => {
    if (onInvalidMode === "fail") return "stop";
    invalid.push(line);
    console.error(`send: ${line.source}:${line.line}: skipped: ${line.reason}`);
  };
  const started = performance.now();
  let inputError: Error | null = null;
  try {
    for await (const input of openInputs(flags.positionals)) {
      for await (const chunk of readLineChunks(input.stream, input.name)) {
        const selected = selectEntries(chunk, onInvalid);
        blank += selected.blank;
        await sender.add(selected.entries, selected.source, selected.lineNos);
        if (selected.stoppedAt) throw new InvalidInputError(selected.stoppedAt);
      }
    }
  } catch (err) {
    if (!(err instanceof InvalidInputError)) {
      events.stop();
      if (sender.summary.entries > 0) {
        console.log(formatSummary(sender.summary, (performance.now() - started) / 1000));
      }
      throw err;
    }
    inputError = err;
  }
  let failure: unknown = null;
  try {
    // Entries read before a bad line are still delivered.
    await sender.finish();
  } catch (err) {
    failure = err;
  } finally {
    events.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    formatSummary(sender.summary, seconds, [["invalid lines skipped", invalid.length], ["blank lines", blank]]),
  );
  if (failure) throw failure;
  if (inputError) {
    console.error(`send: ${inputError.message} (--on-invalid fail)`);
    return 1;
  }
  const summary = sender.summary;
  return summary.rejected.length === 0 && summary.acknowledged === summary.entries ? 0 : 1;
}
