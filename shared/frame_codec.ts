/**
 * Length-prefixed framing shared by both protocol versions: a 4-byte
 * big-endian unsigned length, then that many payload bytes.
 *
 * @module
 */

/** Size of the length prefix in bytes. */
export const FRAME_HEADER_BYTES = 4;

/** The largest length a 4-byte prefix can carry. */
export const MAX_FRAME_LENGTH = 0xffff_ffff;

/** Raised when a payload is too long to be framed or exceeds a configured limit. */
export class FrameTooLargeError extends Error {
  override name = "FrameTooLargeError";
  /** @param length the payload length, @param max the limit it broke */
  constructor(readonly length: number, readonly max: number) {
    super(`frame of ${length} bytes exceeds max-frame-bytes ${max}`);
  }
}

/**
 * Frames a payload: `[u32 BE length][payload]`.
 *
 * @example
 * ```ts
 * encodeFrame(new TextEncoder().encode('{"status":"ok"}'));
 * ```
 */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_FRAME_LENGTH) {
    throw new FrameTooLargeError(payload.length, MAX_FRAME_LENGTH);
  }
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/** One complete frame, or the report of a frame that was too large and was skipped. */
export type FrameEvent =
  | { kind: "frame"; payload: Uint8Array }
  | { kind: "oversize"; length: number; head: Uint8Array };

/** Options for {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest payload accepted; longer frames are skipped, not buffered. */
  maxFrameBytes: number;
  /** How many leading bytes of a skipped frame to keep for the error report. Default 16. */
  headBytes?: number;
}

/**
 * Incremental frame decoder. Feed it socket chunks of any size; it returns the
 * frames they complete. Memory is bounded by `maxFrameBytes`: the payload of
 * an oversized frame is skipped as it streams past, so the framing stays
 * intact and the connection can carry on.
 */
export class FrameDecoder {
  readonly #max: number;
  readonly #headBytes: number;
  readonly #header = new Uint8Array(FRAME_HEADER_BYTES);
  #headerFill = 0;
  #body: Uint8Array | null = null;
  #bodyFill = 0;
  #skipRemaining = 0;
  #skipLength = 0;
  #skipHead: Uint8Array | null = null;
  #skipHeadFill = 0;

  /** @param options limits; see {@linkcode FrameDecoderOptions} */
  constructor(options: FrameDecoderOptions) {
    this.#max = options.maxFrameBytes;
    this.#headBytes = options.headBytes ?? 16;
  }

  /** True when no partial frame is buffered (a clean place for the stream to end). */
  get idle(): boolean {
    return this.#headerFill === 0 && this.#body === null &&
      this.#skipRemaining === 0;
  }

  /** Consumes a chunk and returns every frame it completes, in order. */
  push(chunk: Uint8Array): FrameEvent[] {
    const events: FrameEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.#skipRemaining > 0) {
        i = this.#skip(chunk, i, events);
      } else if (this.#body !== null) {
        const take = Math.min(this.#body.length - this.#bodyFill, chunk.length - i);
        this.#body.set(chunk.subarray(i, i + take), this.#bodyFill);
        this.#bodyFill += take;
        i += take;
        if (this.#bodyFill === this.#body.length) {
          events.push({ kind: "frame", payload: this.#body });
          this.#body = null;
        }
      } else {
        const take = Math.min(FRAME_HEADER_BYTES - this.#headerFill, chunk.length - i);
        this.#header.set(chunk.subarray(i, i + take), this.#headerFill);
        this.#headerFill += take;
        i += take;
        if (this.#headerFill < FRAME_HEADER_BYTES) break;
        this.#headerFill = 0;
        const length = new DataView(this.#header.buffer).getUint32(0);
        if (length > this.#max) {
          this.#skipLength = length;
          this.#skipRemaining = length;
          this.#skipHead = new Uint8Array(Math.min(this.#headBytes, length));
          this.#skipHeadFill = 0;
        } else if (chunk.length - i >= length) {
          // Whole frame inside this chunk: hand out a view, no copy.
          events.push({ kind: "frame", payload: chunk.subarray(i, i + length) });
          i += length;
        } else {
          this.#body = new Uint8Array(length);
          this.#bodyFill = 0;
        }
      }
    }
    return events;
  }

  #skip(chunk: Uint8Array, i: number, events: FrameEvent[]): number {
    const head = this.#skipHead!;
    if (this.#skipHeadFill < head.length) {
      const take = Math.min(head.length - this.#skipHeadFill, chunk.length - i);
      head.set(chunk.subarray(i, i + take), this.#skipHeadFill);
      this.#skipHeadFill += take;
    }
    const take = Math.min(this.#skipRemaining, chunk.length - i);
    this.#skipRemaining -= take;
    if (this.#skipRemaining === 0) {
      events.push({ kind: "oversize", length: this.#skipLength, head });
      this.#skipHead = null;
    }
    return i + take;
  }
}
