/**
 * Scores every built-in detector on its labelled corpus in
 * `tests/pii_corpus/<detector>.json` (regenerate with
 * `deno run -A tests/pii_corpus/generate.ts`): a reported match is a true
 * positive when it equals an expected substring not yet claimed, otherwise a
 * false positive; an expected substring left unclaimed is a false negative.
 *
 * @module
 */
import assert from "node:assert/strict";
import { DETECTOR_NAMES, DETECTORS, findPii } from "../shared/pii_detectors.ts";

interface CorpusCase {
  text: string;
  expected: string[];
}

interface Score {
  cases: number;
  tp: number;
  fp: number;
  fn: number;
  misses: string[];
}

const MIN_RECALL = 0.99;
const MIN_PRECISION = 0.98;
const MIN_CASES = 500;

async function loadCorpus(name: string): Promise<CorpusCase[]> {
  return JSON.parse(await Deno.readTextFile(new URL(`./pii_corpus/${name}.json`, import.meta.url)));
}

function score(name: string, cases: readonly CorpusCase[]): Score {
  const detector = DETECTORS[name]!;
  const s: Score = { cases: cases.length, tp: 0, fp: 0, fn: 0, misses: [] };
  for (const c of cases) {
    const open = [...c.expected];
    for (const m of findPii(c.text, [detector])) {
      const found = c.text.slice(m.start, m.end);
      const at = open.indexOf(found);
      if (at >= 0) {
        open.splice(at, 1);
        s.tp++;
      } else {
        s.fp++;
        if (s.misses.length < 5) s.misses.push(`FP ${JSON.stringify(found)} in ${JSON.stringify(c.text)}`);
      }
    }
    s.fn += open.length;
    for (const e of open) {
      if (s.misses.length < 5) s.misses.push(`FN ${JSON.stringify(e)} in ${JSON.stringify(c.text)}`);
    }
  }
  return s;
}

function ratio(n: number, d: number): number {
  return d === 0 ? 1 : n / d;
}

Deno.test("every built-in detector reaches recall >= 0.99 and precision >= 0.98 on its corpus", async () => {
  const rows: string[] = [];
  const failures: string[] = [];
  for (const name of DETECTOR_NAMES) {
    const cases = await loadCorpus(name);
    const s = score(name, cases);
    const precision = ratio(s.tp, s.tp + s.fp);
    const recall = ratio(s.tp, s.tp + s.fn);
    const positives = cases.filter((c) => c.expected.length > 0).length;
    rows.push(
      [name.padEnd(16), String(s.cases).padStart(5), String(positives).padStart(5), String(s.tp).padStart(5)]
        .concat([String(s.fp).padStart(4), String(s.fn).padStart(4), precision.toFixed(4), recall.toFixed(4)])
        .join("  "),
    );
    if (s.cases < MIN_CASES) failures.push(`${name}: ${s.cases} cases, fewer than ${MIN_CASES}`);
    if (precision < MIN_PRECISION || recall < MIN_RECALL) {
      failures.push(
        `${name}: precision ${precision.toFixed(4)}, recall ${recall.toFixed(4)}\n  ${s.misses.join("\n  ")}`,
      );
    }
  }
  console.log(
    ["detector".padEnd(16), "cases", "  pos", "   tp", "  fp", "  fn", "precision", "recall"].join("  ") + "\n" +
      rows.join("\n"),
  );
  assert.deepStrictEqual(failures, []);
});

Deno.test("every corpus file labels substrings that occur in their text", async () => {
  const wrong: string[] = [];
  for (const name of DETECTOR_NAMES) {
    for (const c of await loadCorpus(name)) {
      for (const e of c.expected) if (!c.text.includes(e)) wrong.push(`${name}: ${JSON.stringify(e)}`);
    }
  }
  assert.deepStrictEqual(wrong, []);
});
