/**
 * Provenance: under mutual TLS every stored entry carries the identity of the
 * client that sent it, in a field the collector sets and no sender may set:
 * `{"_tlslog_client":{"cn":"billing","san":["DNS:billing.clinic.example"]}, ...the entry}`.
 * The field is written first, so that a reader sees who sent an entry before
 * what it says, and an entry that already has it is refused (whatever the
 * TLS mode), so that the field in the store is always the collector's.
 *
 * @module
 */
import type { Entry } from "../shared/json_entry.ts";
import type { ClientIdentity } from "./tls_credentials.ts";

/** The field the collector stamps on each entry from a client with a certificate. */
export const PROVENANCE_FIELD = "_tlslog_client";

/** Whether an entry sets the collector's provenance field itself. */
export function carriesProvenance(entry: Entry): boolean {
  return Object.hasOwn(entry, PROVENANCE_FIELD);
}

/** The refusal for such an entry. */
export const PROVENANCE_REFUSAL =
  `field "${PROVENANCE_FIELD}" is set by the collector (the sender's certificate identity); an entry may not carry it`;

/** The `"_tlslog_client":{...}` member for `id`, computed once per connection. */
export function provenanceMember(id: ClientIdentity): string {
  return `${JSON.stringify(PROVENANCE_FIELD)}:${JSON.stringify({ cn: id.cn, san: id.san })}`;
}

/**
 * Puts `member` first in the JSON object `line` (one valid JSON object, as
 * validated before): `{"a":1}` becomes `{<member>,"a":1}` and `{}` becomes
 * `{<member>}`. Leading and inner whitespace is kept.
 */
export function stampLine(line: string, member: string): string {
  const open = line.indexOf("{");
  let next = open + 1;
  while (next < line.length && (line[next] === " " || line[next] === "\t" || line[next] === "\r")) next++;
  const empty = line[next] === "}";
  return `${line.slice(0, open + 1)}${member}${empty ? "" : ","}${line.slice(open + 1)}`;
}
