import assert from "node:assert/strict";
import { carriesProvenance, PROVENANCE_FIELD, provenanceMember, stampLine } from "./provenance.ts";

const member = provenanceMember({ cn: "billing", san: ["DNS:billing.clinic.example", "IP Address:10.0.0.7"] });

Deno.test("provenanceMember names CN and SANs as JSON", () => {
  assert.deepEqual(
    JSON.parse(`{${member}}`),
    { [PROVENANCE_FIELD]: { cn: "billing", san: ["DNS:billing.clinic.example", "IP Address:10.0.0.7"] } },
  );
  assert.deepEqual(JSON.parse(`{${provenanceMember({ cn: null, san: [] })}}`), {
    [PROVENANCE_FIELD]: { cn: null, san: [] },
  });
});

Deno.test("provenanceMember escapes what a certificate name may hold", () => {
  const odd = provenanceMember({ cn: 'a"b\\c\n}{', san: ["URI:x,y"] });
  assert.deepEqual(JSON.parse(`{${odd}}`)[PROVENANCE_FIELD].cn, 'a"b\\c\n}{');
});

Deno.test("stampLine puts the member first and keeps the entry's own bytes", () => {
  for (
    const line of [
      '{"a":1}',
      '{ "a" : [1, {"b": "}"}] }',
      '  {\t"x":null}',
      '{"nested":{"deep":{"k":"v"}},"s":"{"}',
    ]
  ) {
    const stamped = stampLine(line, member);
    const parsed = JSON.parse(stamped);
    assert.deepEqual(Object.keys(parsed)[0], PROVENANCE_FIELD);
    const { [PROVENANCE_FIELD]: _, ...rest } = parsed;
    assert.deepEqual(rest, JSON.parse(line));
    assert.deepEqual(stamped.replace(member + ",", ""), line);
  }
});

Deno.test("stampLine handles empty objects", () => {
  for (const line of ["{}", "{ }", " {\t}"]) {
    const parsed = JSON.parse(stampLine(line, member));
    assert.deepEqual(Object.keys(parsed), [PROVENANCE_FIELD]);
  }
});

Deno.test("carriesProvenance sees the reserved field only at the top level", () => {
  assert.deepEqual(carriesProvenance({ [PROVENANCE_FIELD]: "forged" }), true);
  assert.deepEqual(carriesProvenance({ a: { [PROVENANCE_FIELD]: 1 } }), false);
  assert.deepEqual(carriesProvenance({ a: 1 }), false);
});
