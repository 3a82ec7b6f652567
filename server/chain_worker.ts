/**
 * The worker side of chain_hasher.ts: chains the lines it is sent, in the
 * order it receives them, and sends back the new state and the chain-file
 * records. Runs as a module Worker.
 *
 * @module
 */
import { chainLines } from "./entry_chain.ts";

/** A request: chain `data` onto the state (seq, head). */
export interface ChainRequest {
  id: number;
  seq: number;
  head: Uint8Array;
  data: Uint8Array;
}

/** The answer to a {@linkcode ChainRequest}. */
export interface ChainResponse {
  id: number;
  seq: number;
  head: Uint8Array;
  records: string;
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<ChainRequest>) => void) | null;
  postMessage(message: ChainResponse): void;
};

scope.onmessage = (e) => {
  const { id, seq, head, data } = e.data;
  const chained = chainLines({ seq, head }, data);
  scope.postMessage({ id, seq: chained.state.seq, head: chained.state.head, records: chained.records });
};
