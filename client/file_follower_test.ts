import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type FollowChunk,
  followLines,
  type FollowOptions,
  type FollowPosition,
  InvalidFollowOptionError,
} from "./file_follower.ts";

const WAIT_MS = 5000;

/** `promise`, or a rejection naming `what` when it does not settle within `ms`. */
async function within<T>(promise: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A follower under test: chunks on demand, with a bounded wait, and its notices. */
class Tail {
  readonly notices: string[] = [];
  readonly #ac = new AbortController();
  readonly #gen: AsyncGenerator<FollowChunk>;
  #pending?: Promise<IteratorResult<FollowChunk>>;
  #noticeWaiters: { re: RegExp; resolve: () => void }[] = [];

  constructor(path: string, options: FollowOptions = {}) {
    this.#gen = followLines(path, {
      pollMs: 20,
      ...options,
      signal: this.#ac.signal,
      onNotice: (m) => {
        this.notices.push(m);
        for (const w of this.#noticeWaiters.filter((w) => w.re.test(m))) w.resolve();
      },
    });
  }

  /** Starts waiting for the next chunk; the generator runs only while a chunk is asked for. */
  next(): Promise<FollowChunk> {
    this.#pending ??= this.#gen.next();
    return within(this.#pending, "next chunk").then((r) => {
      this.#pending = undefined;
      if (r.done) throw new Error("the follower ended");
      return r.value;
    });
  }

  /** Chunks until they hold at least `n` lines. */
  async chunks(n: number): Promise<FollowChunk[]> {
    const out: FollowChunk[] = [];
    let count = 0;
    while (count < n) {
      const c = await this.next();
      out.push(c);
      count += c.lines.length;
    }
    return out;
  }

  /** Resolves when a notice matching `re` has been given (already or later). */
  notice(re: RegExp): Promise<void> {
    if (this.notices.some((m) => re.test(m))) return Promise.resolve();
    return within(new Promise((resolve) => this.#noticeWaiters.push({ re, resolve })), `notice ${re}`);
  }

  /** Aborts, and checks that the generator then ends without yielding more. */
  async stop(): Promise<void> {
    this.#ac.abort();
    const last = await within(this.#pending ?? this.#gen.next(), "end after abort");
    this.#pending = undefined;
    assert.deepStrictEqual(last, { done: true, value: undefined });
    await this.#gen.return(undefined);
  }
}

/** [source file name, line number, text] of every line of `chunks`. */
function linesOf(chunks: FollowChunk[]): [string, number, string][] {
  return chunks.flatMap((c) =>
    c.lines.map((l, i): [string, number, string] => [basename(c.source), c.firstLine + i, l])
  );
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

async function inode(path: string): Promise<number> {
  return (await Deno.stat(path)).ino!;
}

async function append(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path, text, { append: true });
}

/** Runs `body` with a fresh temporary directory and the path of `app.log` in it. */
async function inTempDir(body: (dir: string, log: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "file_follower_test_" });
  try {
    await body(dir, join(dir, "app.log"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("followLines() reads existing lines, then appended ones, holding a partial line until its newline", async () => {
  await inTempDir(async (_dir, log) => {
    await Deno.writeTextFile(log, "a\nb\npart");
    const ino = await inode(log);
    const tail = new Tail(log);
    try {
      assert.deepStrictEqual(await tail.next(), {
        lines: ["a", "b"],
        position: { ino, offset: 4 },
        source: log,
        firstLine: 1,
      });
      const next = tail.next();
      await append(log, "ial\r\nc\n");
      assert.deepStrictEqual(await next, {
        lines: ["partial", "c"],
        position: { ino, offset: 15 },
        source: log,
        firstLine: 3,
      });
      assert.deepStrictEqual(tail.notices, [`following ${log} (inode ${ino}) from byte 0`]);
    } finally {
      await tail.stop();
    }
  });
});

Deno.test("followLines() decodes multi-byte UTF-8 split between reads, and CRLF split between reads", async () => {
  await inTempDir(async (_dir, log) => {
    const text = "é€😀\r\nx\r\n\nümlaut\n";
    await Deno.writeTextFile(log, text);
    const tail = new Tail(log, { chunkBytes: 3 });
    try {
      const chunks = await tail.chunks(4);
      assert.deepStrictEqual(linesOf(chunks), [
        ["app.log", 1, "é€😀"],
        ["app.log", 2, "x"],
        ["app.log", 3, ""],
        ["app.log", 4, "ümlaut"],
      ]);
      assert.deepStrictEqual(chunks.at(-1)!.position, {
        ino: await inode(log),
        offset: new TextEncoder().encode(text).length,
      });
    } finally {
      await tail.stop();
    }
  });
});

Deno.test("followLines() after rename-and-recreate drains the old file, its last partial line too, then reads the new one", async () => {
  await inTempDir(async (dir, log) => {
    await Deno.writeTextFile(log, "1\n2\n");
    const oldIno = await inode(log);
    const tail = new Tail(log);
    try {
      const before = await tail.chunks(2);
      // The follower is paused at its yield: it cannot notice the rotation before all of this is done.
      await Deno.rename(log, join(dir, "app.log.1"));
      await append(join(dir, "app.log.1"), "3\n4 never terminated");
      await Deno.writeTextFile(log, "5\n6\n");
      const newIno = await inode(log);
      const after = await tail.chunks(4);
      assert.deepStrictEqual(linesOf([...before, ...after]), [
        ["app.log", 1, "1"],
        ["app.log", 2, "2"],
        ["app.log.1", 3, "3"],
        ["app.log.1", 4, "4 never terminated"],
        ["app.log", 1, "5"],
        ["app.log", 2, "6"],
      ]);
      assert.deepStrictEqual(after.map((c) => c.position), [
        { ino: oldIno, offset: 6 },
        { ino: oldIno, offset: 24 },
        { ino: newIno, offset: 4 },
      ]);
      assert.deepStrictEqual(tail.notices, [
        `following ${log} (inode ${oldIno}) from byte 0`,
        `rotated: draining ${join(dir, "app.log.1")}`,
        `following ${log} (inode ${newIno}) from byte 0`,
      ]);
      const marker = tail.next();
      await append(log, "7\n");
      assert.deepStrictEqual(linesOf([await marker]), [["app.log", 3, "7"]]);
    } finally {
      await tail.stop();
    }
  });
});

Deno.test("followLines() loses and repeats nothing when rotation happens while it is polling", async () => {
  await inTempDir(async (dir, log) => {
    await Deno.writeTextFile(log, "1\n");
    const tail = new Tail(log);
    try {
      const got = await tail.chunks(1);
      const waiting = tail.chunks(4);
      await append(log, "2\n");
      await Deno.rename(log, join(dir, "app.log.1"));
      await append(join(dir, "app.log.1"), "3\n");
      await Deno.writeTextFile(log, "4\n");
      await append(log, "5\n");
      got.push(...await waiting);
      // Whether 2 and 3 are read before the rotation is seen depends on timing, so sources are not compared.
      assert.deepStrictEqual(got.flatMap((c) => c.lines), ["1", "2", "3", "4", "5"]);
    } finally {
      await tail.stop();
    }
  });
});

Deno.test("followLines() after copytruncate restarts at 0 of the truncated file and says so", async () => {
  await inTempDir(async (dir, log) => {
    await Deno.writeTextFile(log, "1\n2\n3\n");
    const ino = await inode(log);
    const tail = new Tail(log);
    try {
      assert.deepStrictEqual(await tail.next(), {
        lines: ["1", "2", "3"],
        position: { ino, offset: 6 },
        source: log,
        firstLine: 1,
      });
      await Deno.copyFile(log, join(dir, "app.log.1"));
      await Deno.truncate(log, 0);
      await append(log, "4\n");
      assert.deepStrictEqual(await tail.next(), {
        lines: ["4"],
        position: { ino, offset: 2 },
        source: log,
        firstLine: 1,
      });
      assert.deepStrictEqual(tail.notices, [
        `following ${log} (inode ${ino}) from byte 0`,
        `truncated: ${log} is 2 bytes, less than the 6 read; restarting at 0`,
      ]);
    } finally {
      await tail.stop();
    }
  });
});

Deno.test("followLines() with startAt resumes after the saved position, numbering lines from the file's start", async () => {
  await inTempDir(async (_dir, log) => {
    await Deno.writeTextFile(log, "1\n2\npar");
    const ino = await inode(log);
    const first = new Tail(log);
    let saved: FollowPosition;
    try {
      saved = (await first.next()).position;
    } finally {
      await first.stop();
    }
    assert.deepStrictEqual(saved, { ino, offset: 4 });
    await append(log, "tial\n3\n");
    const second = new Tail(log, { startAt: saved });
    try {
      assert.deepStrictEqual(await second.next(), {
        lines: ["partial", "3"],
        position: { ino, offset: 14 },
        source: log,
        firstLine: 3,
      });
      const marker = second.next();
      await append(log, "4\n");
      assert.deepStrictEqual(linesOf([await marker]), [["app.log", 5, "4"]]);
      assert.deepStrictEqual(second.notices, [`following ${log} (inode ${ino}) from byte 4`]);
    } finally {
      await second.stop();
    }
  });
});

Deno.test("followLines() with startAt, after a rotation while stopped, drains the old inode from the offset, then the new file", async () => {
  await inTempDir(async (dir, log) => {
    await Deno.writeTextFile(log, "1\n2\n");
    const oldIno = await inode(log);
    const first = new Tail(log);
    let saved: FollowPosition;
    try {
      saved = (await first.next()).position;
    } finally {
      await first.stop();
    }
    await append(log, "3\n");
    await Deno.rename(log, join(dir, "app.log.1"));
    await append(join(dir, "app.log.1"), "4\n");
    await Deno.writeTextFile(log, "5\n");
    const newIno = await inode(log);
    const second = new Tail(log, { startAt: saved });
    try {
      const chunks = await second.chunks(3);
      assert.deepStrictEqual(linesOf(chunks), [
        ["app.log.1", 3, "3"],
        ["app.log.1", 4, "4"],
        ["app.log", 1, "5"],
      ]);
      assert.deepStrictEqual(chunks.map((c) => c.position), [{ ino: oldIno, offset: 8 }, { ino: newIno, offset: 2 }]);
      assert.deepStrictEqual(second.notices, [
        `rotated while stopped: draining ${join(dir, "app.log.1")} from byte 4`,
        `following ${log} (inode ${newIno}) from byte 0`,
      ]);
    } finally {
      await second.stop();
    }
  });
});

Deno.test("followLines() with startAt whose inode is gone reports the gap and reads the current file from 0", async () => {
  await inTempDir(async (dir, log) => {
    await Deno.writeTextFile(log, "1\n");
    const first = new Tail(log);
    let saved: FollowPosition;
    try {
      saved = (await first.next()).position;
    } finally {
      await first.stop();
    }
    // Created before the old one is removed, so that it cannot get the old inode back.
    await Deno.writeTextFile(join(dir, "app.log.new"), "new\n");
    await Deno.remove(log);
    await Deno.rename(join(dir, "app.log.new"), log);
    const newIno = await inode(log);
    const second = new Tail(log, { startAt: saved });
    try {
      assert.deepStrictEqual(linesOf([await second.next()]), [["app.log", 1, "new"]]);
      assert.deepStrictEqual(second.notices, [
        `gap: no file with inode ${saved.ino} in ${dir}; what was written to it after byte 2 is lost; reading ${log} from 0`,
        `following ${log} (inode ${newIno}) from byte 0`,
      ]);
    } finally {
      await second.stop();
    }
  });
});

Deno.test("followLines() waits for a file that does not exist yet", async () => {
  await inTempDir(async (_dir, log) => {
    const tail = new Tail(log);
    try {
      const next = tail.next();
      await tail.notice(/^waiting for /);
      await Deno.writeTextFile(log, "hello\n");
      assert.deepStrictEqual(await next, {
        lines: ["hello"],
        position: { ino: await inode(log), offset: 6 },
        source: log,
        firstLine: 1,
      });
      assert.deepStrictEqual(tail.notices, [
        `waiting for ${log} to appear`,
        `following ${log} (inode ${await inode(log)}) from byte 0`,
      ]);
    } finally {
      await tail.stop();
    }
  });
});

Deno.test('followLines() from "end" skips the existing complete lines and keeps counting them', async () => {
  await inTempDir(async (_dir, log) => {
    await Deno.writeTextFile(log, "old 1\nold 2\npar");
    const ino = await inode(log);
    const tail = new Tail(log, { from: "end" });
    try {
      const next = tail.next();
      await tail.notice(/^following /);
      await append(log, "tial\nnew\n");
      assert.deepStrictEqual(await next, {
        lines: ["partial", "new"],
        position: { ino, offset: 24 },
        source: log,
        firstLine: 3,
      });
      assert.deepStrictEqual(tail.notices, [`following ${log} (inode ${ino}) from byte 12`]);
    } finally {
      await tail.stop();
    }
  });
});

Deno.test("followLines() rejects a chunkBytes below 1", async () => {
  await assert.rejects(
    followLines("x", { chunkBytes: 0 }).next(),
    (e: unknown) =>
      e instanceof InvalidFollowOptionError && /chunkBytes must be a positive integer, got 0/.test(e.message),
  );
});
