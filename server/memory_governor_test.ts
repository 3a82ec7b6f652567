import assert from "node:assert/strict";
import { MemoryGovernor, type MemoryProbes } from "./memory_governor.ts";

const MB = 1024 * 1024;

/** Probes over a simulated process: `garbage` is what a collection frees, `live` what it cannot. */
function fakeProcess() {
  const p = {
    live: 100 * MB,
    garbage: 0,
    t: 0,
    collects: 0,
    trims: 0,
  };
  const probes: MemoryProbes = {
    rss: () => p.live + p.garbage,
    collect: () => {
      p.collects++;
    },
    trim: () => {
      p.trims++;
      p.garbage = 0;
    },
    now: () => p.t,
  };
  return { p, probes };
}

Deno.test("MemoryGovernor: under the target it only measures", () => {
  const { p, probes } = fakeProcess();
  const g = new MemoryGovernor(200 * MB, probes);
  g.check();
  p.garbage = 50 * MB;
  g.check();
  assert.equal(p.collects, 0);
  const s = g.stats();
  assert.equal(s.rss_bytes, 150 * MB);
  assert.equal(s.peak_rss_bytes, 150 * MB);
  assert.equal(s.collections, 0);
});

Deno.test("MemoryGovernor: over the target it collects and trims; a little over, at most every 100 ms", () => {
  const { p, probes } = fakeProcess();
  const g = new MemoryGovernor(200 * MB, probes);
  p.live = 190 * MB;
  p.garbage = 150 * MB;
  g.check();
  assert.deepEqual([p.collects, p.trims, g.stats().rss_bytes], [1, 1, 190 * MB]);
  assert.equal(g.stats().peak_rss_bytes, 340 * MB);
  p.garbage = 12 * MB; // over the target, but grown by less than 16 MB since the collection
  p.t = 50;
  g.check();
  assert.equal(p.collects, 1, "too soon after the last");
  p.t = 100;
  g.check();
  assert.equal(p.collects, 2);
  p.garbage = 40 * MB; // grown by 40 MB: at once
  p.t = 110;
  g.check();
  assert.equal(p.collects, 3);
  assert.equal(g.stats().over_target_after_collection, 0);
});

Deno.test("MemoryGovernor: note() checks after every few MB of input, not before", () => {
  const { p, probes } = fakeProcess();
  const g = new MemoryGovernor(200 * MB, probes, 8 * MB);
  p.garbage = 150 * MB;
  g.note(4 * MB);
  assert.equal(p.collects, 0);
  g.note(4 * MB);
  assert.equal(p.collects, 1);
  p.garbage = 150 * MB;
  p.t = 1000;
  g.note(7 * MB);
  assert.equal(p.collects, 1, "the count starts again after a check");
  g.note(1 * MB);
  assert.equal(p.collects, 2);
});

Deno.test("MemoryGovernor: when the memory is in use it backs off, up to 2 s, and recovers", () => {
  const { p, probes } = fakeProcess();
  const g = new MemoryGovernor(200 * MB, probes);
  p.live = 300 * MB;
  const times: number[] = [];
  for (let t = 0; t <= 6000; t += 10) {
    p.t = t;
    const before = p.collects;
    g.check();
    if (p.collects > before) times.push(t);
  }
  // Gaps double from 100 ms: 0, 200 (gap 200), 600 (400), 1400 (800), 3000 (1600), 5000 (2000 cap).
  assert.deepEqual(times, [0, 200, 600, 1400, 3000, 5000]);
  assert.equal(g.stats().over_target_after_collection, 6);
  p.live = 100 * MB;
  p.garbage = 150 * MB;
  p.t = 7000;
  g.check();
  assert.equal(p.collects, 7);
  p.garbage = 150 * MB;
  p.t = 7100;
  g.check();
  assert.equal(p.collects, 8, "back to 100 ms once a collection brings it under");
});

Deno.test("MemoryGovernor: target 0 or no reclaimers only measures", () => {
  const { p, probes } = fakeProcess();
  p.garbage = 500 * MB;
  const off = new MemoryGovernor(0, probes);
  off.check();
  assert.equal(p.collects, 0);
  assert.equal(off.stats().rss_bytes, 600 * MB);
  const none = new MemoryGovernor(100 * MB, { ...probes, collect: null, trim: null });
  none.check();
  assert.deepEqual([none.stats().collections, none.stats().can_collect, none.stats().can_trim], [0, false, false]);
});

Deno.test("MemoryGovernor: backed off, it still collects once the set has grown by 16 MB since the last collection", () => {
  const { p, probes } = fakeProcess();
  const g = new MemoryGovernor(200 * MB, probes);
  p.live = 300 * MB;
  g.check(); // frees nothing: gap 200 ms
  p.t = 100;
  p.garbage = 10 * MB;
  g.check();
  assert.equal(p.collects, 1, "10 MB of growth waits for the back-off");
  p.garbage = 20 * MB;
  g.check();
  assert.equal(p.collects, 2, "20 MB of growth does not");
  assert.equal(p.garbage, 0);
});

Deno.test("MemoryGovernor: a collection that frees a lot keeps the 100 ms pace even when still over the target", () => {
  const { p, probes } = fakeProcess();
  const g = new MemoryGovernor(200 * MB, probes);
  p.live = 220 * MB;
  for (let t = 0; t <= 500; t += 100) {
    p.t = t;
    p.garbage = 100 * MB;
    g.check();
  }
  assert.equal(p.collects, 6);
  assert.equal(g.stats().over_target_after_collection, 6);
});
