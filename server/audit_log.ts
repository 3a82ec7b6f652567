/**
 * The collector's audit trail: a tamper-evident, append-only record of what
 * the collector did (started, stopped, accepted a sender, changed a key...).
 *
 * Format: `tlslog-audit.jsonl` in the data directory (mode 0600), one JSON
 * object per line,
 * `{"seq":1,"time":"2026-11-22T09:00:00.000Z","event":"start",...,"prev":"<64 hex>"}`,
 * keys in that order: seq, time, event, the event's fields, and prev last.
 * `seq` counts from 1 without gaps and `prev` is the chain head before the
 * line:
 *
 *     head_0 = 32 zero bytes
 *     head_n = SHA-256(head_{n-1} || UTF-8 bytes of line n without its newline)
 *
 * An edited, inserted, deleted or reordered line breaks the seq sequence or a
 * prev link; a cut-off tail is caught by comparing (size, head) with a signed
 * checkpoint kept elsewhere. A torn last line (a crash mid-write) is cut off
 * on open; damage anywhere else stops the collector from appending to the
 * log.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { hash } from "node:crypto";
import { join } from "node:path";
import { writeAll } from "../shared/bytes.ts";
import { syncDir } from "./commit_log.ts";

/** Name of the audit log inside the data directory. */
export const AUDIT_LOG_NAME = "tlslog-audit.jsonl";

/** Raised for a record that cannot be written: a reserved field name, a closed or failed log, a value JSON cannot hold. */
export class AuditError extends Error {
  override name = "AuditError";
}

/** Raised by {@link AuditLog.open} when the existing log is damaged somewhere other than a torn last line. */
export class AuditLogCorruptError extends Error {
  override name = "AuditLogCorruptError";
}

/** Where the chain ends: what a signed checkpoint pins. */
export interface AuditHead {
  /** Bytes of the log (complete lines, newlines included). */
  size: number;
  /** head_n, the hash after the last line; 32 zero bytes for an empty log. */
  hash: Uint8Array;
}

/** One problem found by {@link verifyAuditText}. */
export interface AuditDamage {
  /** 1-based line number the problem is at. */
  line: number;
  /** What happened to the log there. */
  kind: "edited" | "inserted" | "deleted" | "reordered" | "malformed" | "broken_link";
  /** Human-readable description naming the line. */
  message: string;
}

const RESERVED = new Set(["seq", "time", "event", "prev"]);
const HEX64 = /^[0-9a-f]{64}$/;
const ZERO_HEX = "0".repeat(64);
/** How far ahead to look for the line a run of inserted lines was put in front of. */
const LOOKAHEAD = 64;
const encoder = new TextEncoder();

let scratch = new Uint8Array(4096);

/** Value of a lowercase hex digit. */
const nibble = (c: number) => (c <= 57 ? c - 48 : c - 87);

/**
 * Hex of SHA-256(prev || data[start..end)), `prev` given as 64 lowercase hex
 * digits. Heads are kept as hex: node:crypto's hex output is several times
 * faster than its Buffer output here.
 */
function chainStep(prevHex: string, data: Uint8Array, start: number, end: number): string {
  const total = 32 + end - start;
  if (scratch.length < total) scratch = new Uint8Array(Math.max(total, scratch.length * 2));
  for (let k = 0; k < 32; k++) {
    scratch[k] = (nibble(prevHex.charCodeAt(2 * k)) << 4) | nibble(prevHex.charCodeAt(2 * k + 1));
  }
  scratch.set(data.subarray(start, end), 32);
  return hash("sha256", scratch.subarray(0, total), "hex");
}

/** Bytes of 64 lowercase hex digits. */
function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(32);
  for (let k = 0; k < 32; k++) out[k] = (nibble(hex.charCodeAt(2 * k)) << 4) | nibble(hex.charCodeAt(2 * k + 1));
  return out;
}

/** A well-formed line: its claimed place in the chain and the head it produces from there. */
interface Link {
  seq: number;
  prev: string;
  /** Hex of SHA-256(prev || line). */
  out: string;
}

/** Why a line is not an audit record, or undefined when it is one. */
function lineProblem(record: unknown): string | undefined {
  if (typeof record !== "object" || record === null || Array.isArray(record)) return "not a JSON object";
  const r = record as Record<string, unknown>;
  if (!Number.isSafeInteger(r.seq) || (r.seq as number) < 1) return "no valid seq";
  if (typeof r.time !== "string") return "no time";
  if (typeof r.event !== "string") return "no event";
  if (typeof r.prev !== "string" || !HEX64.test(r.prev)) return "no valid prev";
  return undefined;
}

/** Parses the complete lines of `text` (whose UTF-8 encoding is `bytes`) and hashes them. */
function scan(
  text: string,
  bytes: Uint8Array,
): { lines: (Link | string)[]; headHex: string; size: number; tornTail: boolean } {
  const parts = text.split("\n");
  const tornTail = parts.pop() !== "";
  const lines: (Link | string)[] = [];
  let headHex = ZERO_HEX;
  let pos = 0;
  for (const part of parts) {
    // UTF-8 never has a 0x0a byte inside a character, so the n-th "\n" is the n-th 0x0a.
    const end = bytes.indexOf(10, pos);
    const nextHex = chainStep(headHex, bytes, pos, end);
    let record: unknown;
    let problem: string | undefined;
    try {
      record = JSON.parse(part);
      problem = lineProblem(record);
    } catch {
      problem = "not JSON";
    }
    if (problem !== undefined) {
      lines.push(problem);
    } else {
      const { seq, prev } = record as { seq: number; prev: string };
      const out = prev === headHex ? nextHex : chainStep(prev, bytes, pos, end);
      lines.push({ seq, prev, out });
    }
    headHex = nextHex;
    pos = end + 1;
  }
  return { lines, headHex, size: pos, tornTail };
}

/** A seq jump: the seqs missing before the line of its "deleted" damage. */
interface Gap {
  first: number;
  last: number;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/**
 * Walks the chain and names what broke it. After a problem it resynchronises
 * on the line's own seq and prev, so that independent damage further on is
 * found too.
 */
function classify(lines: readonly (Link | string)[]): AuditDamage[] {
  const damage: AuditDamage[] = [];
  const gaps = new Map<AuditDamage, Gap>();
  /** Lines outside the chain, by index. */
  const strays = new Set<number>();
  /** Seqs of the lines that make up the chain. */
  const placed = new Set<number>();
  let expSeq = 1;
  let expHead = ZERO_HEX;
  /** 1-based number of the line expHead was computed from; 0 at the start of the chain. */
  let lastLine = 0;
  /** Malformed lines since the last line in the chain: they may stand in for as many records. */
  let unknown = 0;

  const link = (j: number): Link | undefined => {
    const l = lines[j];
    return typeof l === "object" ? l : undefined;
  };
  const links = (j: number, seq: number, head: string) => {
    const l = link(j);
    return l !== undefined && l.seq === seq && l.prev === head;
  };
  const accept = (i: number, l: Link) => {
    expSeq = l.seq + 1;
    expHead = l.out;
    lastLine = i + 1;
    unknown = 0;
    placed.add(l.seq);
  };
  const stray = (i: number, message: string) => {
    damage.push({ line: i + 1, kind: "inserted", message });
    strays.add(i);
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const no = i + 1;
    if (typeof line === "string") {
      damage.push({ line: no, kind: "malformed", message: `line ${no} is not an audit record: ${line}` });
      unknown++;
      continue;
    }
    const l = line;
    if (l.seq === expSeq && l.prev === expHead) {
      accept(i, l);
      continue;
    }
    if (unknown > 0 && l.seq > expSeq && l.seq <= expSeq + unknown) {
      // The malformed lines before this one were records (already reported).
      accept(i, l);
      continue;
    }
    if (l.seq === expSeq) {
      const next = link(i + 1);
      if (next !== undefined && next.seq === expSeq + 1 && next.prev !== l.out) {
        // Linked to neither neighbour: one edit of this line, prev included, explains both breaks.
        const or = lastLine === 0 ? "" : `, or lines ${lastLine} and ${no} both were`;
        damage.push({
          line: no,
          kind: "broken_link",
          message: `line ${no} is linked to neither neighbour: it was edited, its prev included${or}`,
        });
        placed.add(l.seq);
        expSeq++;
        expHead = next.prev;
        lastLine = no;
        unknown = 0;
        continue;
      }
      // In its place but not linked to the line before: that line's content changed.
      damage.push(
        lastLine === 0
          ? { line: no, kind: "edited", message: `line ${no} was edited: its prev is not the start of the chain` }
          : {
            line: lastLine,
            kind: "edited",
            message: `line ${lastLine} was edited: its hash does not match the prev of line ${no}`,
          },
      );
      accept(i, l);
      continue;
    }
    const next = link(i + 1);
    if (next !== undefined && links(i + 1, expSeq, expHead) && l.seq === next.seq + 1 && l.prev === next.out) {
      damage.push({ line: no, kind: "reordered", message: `line ${no} was swapped with line ${no + 1}` });
      placed.add(next.seq);
      accept(i, l);
      i++;
      continue;
    }
    if (l.prev === expHead && (i + 1 === lines.length || next?.seq === expSeq + 1)) {
      // Linked to the line before but numbered wrong: its seq was changed.
      damage.push({ line: no, kind: "edited", message: `line ${no} was edited: seq ${l.seq} where ${expSeq} belongs` });
      if (next !== undefined) {
        expHead = next.prev;
        expSeq++;
        lastLine = no;
        unknown = 0;
      }
      continue;
    }
    // Lines put in front of the line that carries on the chain. A seq ahead is taken to be inserted only when
    // the very next line carries on: otherwise lines are missing (or were moved later; see below).
    const limit = Math.min(lines.length, i + 1 + (l.seq < expSeq ? LOOKAHEAD : 1));
    let j = i + 1;
    while (j < limit && !links(j, expSeq, expHead)) j++;
    if (j < limit) {
      for (let k = i; k < j; k++) {
        const m = lines[k]!;
        if (typeof m === "string") {
          damage.push({ line: k + 1, kind: "malformed", message: `line ${k + 1} is not an audit record: ${m}` });
        } else {
          stray(k, `line ${k + 1} was inserted: seq ${m.seq} where ${expSeq} belongs, and line ${j + 1} carries on`);
        }
      }
      i = j - 1;
      continue;
    }
    const before = lastLine === i ? link(i - 1) : undefined;
    if (before !== undefined && l.seq === before.seq && l.prev === before.prev) {
      // Two lines claim the same place; the one the chain goes on from is the real one.
      if (links(i + 1, l.seq + 1, l.out)) {
        damage.push({
          line: i,
          kind: "inserted",
          message: `line ${i} was inserted: line ${no} holds seq ${l.seq} too, and the chain goes on from line ${no}`,
        });
        strays.add(i - 1);
        accept(i, l);
      } else {
        stray(i, `line ${no} was inserted: it repeats seq ${l.seq} of line ${i}`);
      }
      continue;
    }
    if (l.seq > expSeq) {
      const first = expSeq + unknown;
      const entry: AuditDamage = { line: no, kind: "deleted", message: "" };
      damage.push(entry);
      gaps.set(entry, { first, last: l.seq - 1 });
      accept(i, l);
      continue;
    }
    const what = `seq goes back to ${l.seq} where ${expSeq} belongs`;
    if (links(i + 1, l.seq + 1, l.out)) {
      // The chain goes on from here (a replayed or spliced-in run): follow it.
      damage.push({ line: no, kind: "inserted", message: `line ${no} starts inserted lines: ${what}` });
      accept(i, l);
    } else {
      stray(i, `line ${no} was inserted: ${what}`);
    }
  }

  // A stray that links exactly into the place of a line missing from the chain was moved, not inserted.
  const outs = new Map<number, Set<string>>();
  const prevs = new Map<number, Set<string>>();
  for (const l of lines) {
    if (typeof l === "string") continue;
    if (!outs.has(l.seq)) outs.set(l.seq, new Set());
    outs.get(l.seq)!.add(l.out);
    if (!prevs.has(l.seq)) prevs.set(l.seq, new Set());
    prevs.get(l.seq)!.add(l.prev);
  }
  const moved = new Set<number>();
  const strayCount = new Map<number, number>();
  for (const i of strays) {
    const s = (lines[i] as Link).seq;
    strayCount.set(s, (strayCount.get(s) ?? 0) + 1);
  }
  for (const i of strays) {
    const l = lines[i] as Link;
    if (placed.has(l.seq) || strayCount.get(l.seq) !== 1) continue;
    const fitsBefore = l.seq === 1 ? l.prev === ZERO_HEX : outs.get(l.seq - 1)?.has(l.prev) === true;
    const after = prevs.get(l.seq + 1);
    if (fitsBefore && (after === undefined || after.has(l.out))) moved.add(l.seq);
  }
  const out: AuditDamage[] = [];
  for (const d of damage) {
    const i = d.line - 1;
    const l = lines[i];
    if (d.kind === "inserted" && strays.has(i) && typeof l === "object" && moved.has(l.seq)) {
      out.push({ line: d.line, kind: "reordered", message: `line ${d.line} (seq ${l.seq}) is out of order` });
      continue;
    }
    const gap = gaps.get(d);
    if (gap !== undefined) {
      const missing: number[] = [];
      for (let s = gap.first; s <= gap.last; s++) if (!moved.has(s)) missing.push(s);
      if (missing.length === 0) continue;
      const seqs = missing.length === 1 ? `seq ${missing[0]}` : `seq ${missing[0]}..${missing[missing.length - 1]}`;
      d.message = `${plural(missing.length, "line")} deleted before line ${d.line} (${seqs})`;
    }
    out.push(d);
  }
  return out.sort((a, b) => a.line - b.line);
}

/**
 * Checks audit-log text. A last line without its newline (a torn write) is
 * ignored and reported as `tornTail`; every other problem is in `damage`,
 * sorted by line. `head` is computed over the complete lines exactly as they
 * are, so it does not match a checkpoint if anything before it changed.
 */
export function verifyAuditText(text: string): { head: AuditHead; damage: AuditDamage[]; tornTail: boolean } {
  const { lines, headHex, size, tornTail } = scan(text, encoder.encode(text));
  return { head: { size, hash: hexBytes(headHex) }, damage: classify(lines), tornTail };
}

interface Waiter {
  target: number;
  sync: boolean;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** Appends records to the audit log; writes happen in the background, in order. */
export class AuditLog {
  readonly #file: Deno.FsFile;
  readonly #now: () => number;
  #seq: number;
  /** Hex of the chain head. */
  #head: string;
  /** Bytes recorded, written or not. */
  #size: number;
  #written: number;
  #synced: number;
  #queue: Uint8Array[] = [];
  #waiters: Waiter[] = [];
  #writer: Promise<void> | null = null;
  #failure: Error | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;

  private constructor(file: Deno.FsFile, now: () => number, seq: number, head: string, size: number) {
    this.#file = file;
    this.#now = now;
    this.#seq = seq;
    this.#head = head;
    this.#size = this.#written = this.#synced = size;
  }

  /**
   * Opens the log in `dir`, creating it (mode 0600) if missing. An existing
   * log is verified: a torn last line is cut off (with a notice to `log`),
   * and the chain continues from its end.
   *
   * @throws {AuditLogCorruptError} when the log is damaged anywhere else
   */
  static async open(dir: string, options: { now?: () => number; log?: (m: string) => void } = {}): Promise<AuditLog> {
    const now = options.now ?? Date.now;
    const log = options.log ?? ((m: string) => console.error(m));
    const path = join(dir, AUDIT_LOG_NAME);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true, createNew: true, mode: 0o600 });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      file = await Deno.open(path, { read: true, write: true });
      try {
        return await AuditLog.#resume(file, path, now, log);
      } catch (err) {
        file.close();
        throw err;
      }
    }
    try {
      await syncDir(dir);
    } catch (err) {
      file.close();
      throw err;
    }
    return new AuditLog(file, now, 0, ZERO_HEX, 0);
  }

  static async #resume(file: Deno.FsFile, path: string, now: () => number, log: (m: string) => void) {
    const bytes = await Deno.readFile(path);
    const end = bytes.lastIndexOf(10) + 1;
    const complete = bytes.subarray(0, end);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(complete);
    } catch {
      const line = complete.subarray(0, firstBadUtf8Offset(complete)).filter((b) => b === 10).length + 1;
      throw corrupt(path, [{ line, kind: "malformed", message: `line ${line} is not valid UTF-8` }]);
    }
    const { lines, headHex } = scan(text, complete);
    const damage = classify(lines);
    if (damage.length > 0) throw corrupt(path, damage);
    if (end < bytes.length) {
      await file.truncate(end);
      await file.syncData();
      log(
        `audit log: cut a torn last line (${plural(bytes.length - end, "byte")}) from ${path}: a write was interrupted`,
      );
    }
    await file.seek(end, Deno.SeekMode.Start);
    return new AuditLog(file, now, lines.length, headHex, end);
  }

  /**
   * Records an event now: the line is formatted (time = now()), the chain
   * advances and the bytes are queued for writing, all before returning.
   * Fields named seq, time, event or prev are refused; undefined values are
   * left out as JSON.stringify does.
   *
   * @throws {AuditError} when the log is closed or failed, or the fields cannot be recorded
   */
  record(event: string, fields: Record<string, unknown> = {}): void {
    if (this.#closed) throw new AuditError(`${AUDIT_LOG_NAME} is closed: cannot record "${event}"`);
    if (this.#failure !== null) throw this.#failedError();
    if (typeof event !== "string") throw new AuditError("an audit event must be a string");
    if (typeof fields !== "object" || fields === null || Array.isArray(fields)) {
      throw new AuditError(`cannot record "${event}": fields must be an object`);
    }
    for (const key of Object.keys(fields)) {
      if (RESERVED.has(key)) throw new AuditError(`cannot record "${event}": field name "${key}" is reserved`);
    }
    let time: string;
    let body: string | undefined;
    try {
      time = new Date(this.#now()).toISOString();
      body = JSON.stringify(fields);
    } catch (err) {
      throw new AuditError(`cannot record "${event}": ${(err as Error).message}`, { cause: err });
    }
    if (body === undefined || !body.startsWith("{")) {
      throw new AuditError(`cannot record "${event}": fields do not serialise to a JSON object`);
    }
    const seq = this.#seq + 1;
    // Built by hand: an object literal would put integer-like field names before seq.
    const rest = body.length > 2 ? "," + body.slice(1, -1) : "";
    const line = `{"seq":${seq},"time":"${time}","event":${JSON.stringify(event)}${rest},"prev":"${this.#head}"}\n`;
    const bytes = encoder.encode(line);
    const head = chainStep(this.#head, bytes, 0, bytes.length - 1);
    this.#seq = seq;
    this.#head = head;
    this.#size += bytes.length;
    this.#queue.push(bytes);
    this.#writer ??= this.#write();
  }

  /** Resolves when everything recorded so far is written (and, with `sync`, on stable storage). */
  flush(sync = false): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failedError());
    const target = this.#size;
    if (this.#written >= target && (!sync || this.#synced >= target)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#waiters.push({ target, sync, resolve, reject });
      this.#writer ??= this.#write();
    });
  }

  /** The chain after the last record, including records not yet written. */
  get head(): AuditHead {
    return { size: this.#size, hash: hexBytes(this.#head) };
  }

  /** Flushes, syncs and closes the file; record() afterwards throws. Calling it again returns the same promise. */
  close(): Promise<void> {
    this.#closed = true;
    return this.#closing ??= (async () => {
      try {
        await this.flush(true);
      } finally {
        await this.#writer;
        this.#file.close();
      }
    })();
  }

  /** The one writer: drains the queue in order, syncing when a flush asks for it. Never rejects. */
  async #write(): Promise<void> {
    // Let the records of the current turn join the first write.
    await Promise.resolve();
    try {
      for (;;) {
        if (this.#waiters.some((w) => w.sync && w.target <= this.#written)) {
          const upTo = this.#written;
          await this.#file.syncData();
          this.#synced = upTo;
        } else if (this.#queue.length > 0) {
          const parts = this.#queue;
          this.#queue = [];
          const batch = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
          await writeAll(this.#file, batch);
          this.#written += batch.length;
        } else {
          break;
        }
        this.#waiters = this.#waiters.filter((w) => {
          const done = (w.sync ? this.#synced : this.#written) >= w.target;
          if (done) w.resolve();
          return !done;
        });
      }
    } catch (err) {
      this.#failure = err instanceof Error ? err : new Error(String(err));
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const w of waiters) w.reject(this.#failedError());
    } finally {
      this.#writer = null;
    }
  }

  #failedError(): AuditError {
    return new AuditError(`writing ${AUDIT_LOG_NAME} failed: ${this.#failure?.message}`, { cause: this.#failure });
  }
}

function corrupt(path: string, damage: readonly AuditDamage[]): AuditLogCorruptError {
  const first = damage[0]!;
  const more = damage.length > 1 ? ` (and ${plural(damage.length - 1, "more problem")})` : "";
  return new AuditLogCorruptError(
    `${path} is damaged at line ${first.line} (${first.kind}): ${first.message}${more}. ` +
      `Run \`tlslog verify\` for the full report, then move the file aside (keep it as evidence) ` +
      `so that the collector starts a new audit log.`,
  );
}

/** Byte offset of the first invalid UTF-8 sequence in `bytes` (which has one). */
function firstBadUtf8Offset(bytes: Uint8Array): number {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let start = 0;
  for (;;) {
    const end = bytes.indexOf(10, start);
    const stop = end < 0 ? bytes.length : end;
    try {
      decoder.decode(bytes.subarray(start, stop));
    } catch {
      return start;
    }
    if (end < 0) return bytes.length;
    start = end + 1;
  }
}
