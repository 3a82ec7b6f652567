/**
 * Where `--require-deidentified quarantine` sets entries aside: one
 * restricted file (`quarantine/quarantine.jsonl`, directory 0700, file 0600)
 * outside the data files, so identifiable entries are kept for review but
 * never mixed with the de-identified store.
 *
 * @module
 */
import { join } from "node:path";
import { writeAll } from "../shared/bytes.ts";

/** Appends quarantined entries, synced before they are acknowledged. */
export class QuarantineFile {
  readonly path: string;
  #file: Deno.FsFile | null = null;
  #chain: Promise<void> = Promise.resolve();
  readonly #dir: string;

  /** @param dataDir the collector's data directory */
  constructor(dataDir: string) {
    this.#dir = join(dataDir, "quarantine");
    this.path = join(this.#dir, "quarantine.jsonl");
  }

  /** Appends JSON lines; resolves once they are on stable storage. */
  append(lines: string[]): Promise<void> {
    const data = new TextEncoder().encode(lines.map((l) => l + "\n").join(""));
    this.#chain = this.#chain.then(async () => {
      if (!this.#file) {
        await Deno.mkdir(this.#dir, { recursive: true, mode: 0o700 });
        this.#file = await Deno.open(this.path, { append: true, create: true, mode: 0o600 });
      }
      await writeAll(this.#file, data);
      await this.#file.syncData();
    });
    return this.#chain;
  }

  /** Waits for pending appends and closes the file. */
  async close(): Promise<void> {
    await this.#chain.catch(() => {});
    this.#file?.close();
    this.#file = null;
  }
}
