/**
 * The tlslog wire protocol, both versions. See docs/protocol.md.
 *
 * v1 (no ALPN): each client frame is gzip(JSON object); each server frame is
 * the uncompressed JSON `{"status":"ok"}` or `{"status":"error","error":...}`.
 *
 * v2 (ALPN `tlslog/2`): each frame starts with a message-type byte. The client
 * opens with HELLO naming its stream, then sends numbered BATCH messages
 * (gzip of newline-terminated JSON objects) without waiting; the server answers
 * each with an ACK or NACK naming the sequence number.
 *
 * @module
 */

/** ALPN protocol id that selects protocol v2. A connection without ALPN speaks v1. */
export const ALPN_V2 = "tlslog/2";

/** v2 message types; client-to-server below 0x80, server-to-client above. */
export const MessageType = {
  Hello: 0x01,
  Batch: 0x02,
  Ping: 0x03,
  Status: 0x04,
  Welcome: 0x81,
  Ack: 0x82,
  Nack: 0x83,
  Pong: 0x84,
} as const;

/** Bytes before the gzip body of a BATCH: type, u64 seq, u32 entry count. */
export const BATCH_HEADER_BYTES = 1 + 8 + 4;

/** Client's opening message. */
export interface Hello {
  /** Stable identity of the sending stream (used to suppress resent batches). */
  stream: string;
  /** Free-form client name and version. */
  client?: string;
}

/** What a sender reports about itself (STATUS), shown in the collector's /api/stats. */
export interface SenderStatus {
  /** Entries waiting in its spool (or in memory) for an ack. */
  spool_entries: number;
  spool_bytes: number;
  /** Age of its oldest unacknowledged batch in ms, or null. */
  oldest_unacked_ms: number | null;
  /** Reconnections after failures since it started. */
  retries: number;
  /** Entries it dropped because its spool was full. */
  dropped: number;
}

/** Server's answer to HELLO: where the stream stands and the limits in force. */
export interface Welcome {
  stream: string;
  /** Highest batch sequence number of this stream already stored (0 for none). */
  last_seq: number;
  max_frame_bytes: number;
  max_batch_bytes: number;
  max_entry_bytes: number;
}

/** An entry of a batch that the server refused, by its 0-based index in the batch. */
export interface EntryRejection {
  index: number;
  error: string;
  /** Reason key: `invalid_entry` (not a JSON object) or `entry_too_large`. */
  code?: string;
}

/** Server's answer to a BATCH it stored (or had already stored). */
export interface Ack {
  seq: number;
  /** Entries of this batch now stored. */
  stored: number;
  /** True when the batch had been stored before and was not stored again. */
  duplicate?: boolean;
  /** Entries refused; the rest of the batch was stored. */
  rejected?: EntryRejection[];
  /** Set when the client is over its rate limit: the collector stops reading from it this long, and says why. */
  throttle?: { wait_ms: number; reason: string };
}

/** Server's refusal of a whole message; `seq` is null when it could not be read. */
export interface Nack {
  seq: number | null;
  /** Machine-readable reason, also the key of the refusal counter. */
  code: string;
  error: string;
}

/** A decoded v2 message. */
export type V2Message =
  | { type: "hello"; hello: Hello }
  | { type: "batch"; seq: number; count: number; body: Uint8Array }
  | { type: "ping"; nonce: number }
  | { type: "status"; status: SenderStatus }
  | { type: "welcome"; welcome: Welcome }
  | { type: "ack"; ack: Ack }
  | { type: "nack"; nack: Nack }
  | { type: "pong"; nonce: number };

/** Raised for a v2 payload that does not follow the protocol. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  /** @param code short machine-readable reason */
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function jsonMessage(type: number, value: unknown): Uint8Array {
  const json = encoder.encode(JSON.stringify(value));
  const out = new Uint8Array(1 + json.length);
  out[0] = type;
  out.set(json, 1);
  return out;
}

/** Encodes HELLO. */
export function encodeHello(hello: Hello): Uint8Array {
  return jsonMessage(MessageType.Hello, hello);
}

/** Encodes STATUS (client to server; not answered). */
export function encodeStatus(status: SenderStatus): Uint8Array {
  return jsonMessage(MessageType.Status, status);
}

/** Encodes WELCOME. */
export function encodeWelcome(welcome: Welcome): Uint8Array {
  return jsonMessage(MessageType.Welcome, welcome);
}

/** Encodes ACK. */
export function encodeAck(ack: Ack): Uint8Array {
  return jsonMessage(MessageType.Ack, ack);
}

/** Encodes NACK. */
export function encodeNack(nack: Nack): Uint8Array {
  return jsonMessage(MessageType.Nack, nack);
}

function u32Message(type: number, value: number): Uint8Array {
  const out = new Uint8Array(5);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, value);
  return out;
}

/** Encodes PING with a nonce echoed by PONG. */
export function encodePing(nonce: number): Uint8Array {
  return u32Message(MessageType.Ping, nonce);
}

/** Encodes PONG. */
export function encodePong(nonce: number): Uint8Array {
  return u32Message(MessageType.Pong, nonce);
}

/** Encodes a BATCH payload around an already gzip-compressed body. */
export function encodeBatch(seq: number, count: number, body: Uint8Array): Uint8Array {
  if (!Number.isSafeInteger(seq) || seq < 1) {
    throw new RangeError(`batch seq must be a positive safe integer, got ${seq}`);
  }
  const out = new Uint8Array(BATCH_HEADER_BYTES + body.length);
  const view = new DataView(out.buffer);
  out[0] = MessageType.Batch;
  view.setBigUint64(1, BigInt(seq));
  view.setUint32(9, count);
  out.set(body, BATCH_HEADER_BYTES);
  return out;
}

/**
 * Reads the sequence number of a BATCH from its first bytes, or null when the
 * bytes are not the start of a BATCH. Used to name a batch that was too large
 * to be read whole.
 */
export function peekBatchSeq(head: Uint8Array): number | null {
  if (head.length < 9 || head[0] !== MessageType.Batch) return null;
  const seq = new DataView(head.buffer, head.byteOffset, 9).getBigUint64(1);
  return seq <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seq) : null;
}

function parseJsonObject(payload: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(payload.subarray(1)));
  } catch (err) {
    throw new ProtocolError("bad_message", `${what} is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("bad_message", `${what} must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

function readU32(payload: Uint8Array, what: string): number {
  if (payload.length !== 5) {
    throw new ProtocolError("bad_message", `${what} must be 5 bytes, got ${payload.length}`);
  }
  return new DataView(payload.buffer, payload.byteOffset, 5).getUint32(1);
}

/**
 * Decodes one v2 payload.
 *
 * @throws {ProtocolError} for an unknown type or a malformed message
 */
export function decodeMessage(payload: Uint8Array): V2Message {
  if (payload.length === 0) throw new ProtocolError("bad_message", "empty message");
  switch (payload[0]) {
    case MessageType.Hello: {
      const obj = parseJsonObject(payload, "HELLO");
      if (typeof obj.stream !== "string" || obj.stream.length === 0 || obj.stream.length > 128) {
        throw new ProtocolError("bad_message", "HELLO needs a stream id of 1 to 128 characters");
      }
      return {
        type: "hello",
        hello: { stream: obj.stream, client: typeof obj.client === "string" ? obj.client : undefined },
      };
    }
    case MessageType.Batch: {
      if (payload.length < BATCH_HEADER_BYTES) {
        throw new ProtocolError("bad_message", `BATCH shorter than its ${BATCH_HEADER_BYTES}-byte header`);
      }
      const view = new DataView(payload.buffer, payload.byteOffset, BATCH_HEADER_BYTES);
      const seq = view.getBigUint64(1);
      if (seq < 1n || seq > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new ProtocolError("bad_seq", `BATCH seq ${seq} is outside 1..2^53-1`);
      }
      return {
        type: "batch",
        seq: Number(seq),
        count: view.getUint32(9),
        body: payload.subarray(BATCH_HEADER_BYTES),
      };
    }
    case MessageType.Ping:
      return { type: "ping", nonce: readU32(payload, "PING") };
    case MessageType.Status: {
      const obj = parseJsonObject(payload, "STATUS");
      const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0);
      return {
        type: "status",
        status: {
          spool_entries: num(obj.spool_entries),
          spool_bytes: num(obj.spool_bytes),
          oldest_unacked_ms: obj.oldest_unacked_ms === null ? null : num(obj.oldest_unacked_ms),
          retries: num(obj.retries),
          dropped: num(obj.dropped),
        },
      };
    }
    case MessageType.Pong:
      return { type: "pong", nonce: readU32(payload, "PONG") };
    case MessageType.Welcome:
      return { type: "welcome", welcome: parseJsonObject(payload, "WELCOME") as unknown as Welcome };
    case MessageType.Ack:
      return { type: "ack", ack: parseJsonObject(payload, "ACK") as unknown as Ack };
    case MessageType.Nack:
      return { type: "nack", nack: parseJsonObject(payload, "NACK") as unknown as Nack };
    default:
      throw new ProtocolError("unknown_type", `unknown message type 0x${payload[0]!.toString(16).padStart(2, "0")}`);
  }
}

/** The v1 answer for a stored entry. */
export const V1_OK: Uint8Array = encoder.encode('{"status":"ok"}');

/** The v1 answer for a refused frame. */
export function encodeV1Error(error: string): Uint8Array {
  return encoder.encode(JSON.stringify({ status: "error", error }));
}
