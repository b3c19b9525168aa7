import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, type ReadStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";

/** Thrown when an upload exceeds the size limit. */
export class TooLargeError extends Error {
  override name = "TooLargeError";
}

/**
 * NAR files, content-addressed: `<dir>/sha256/<hex>` holds the file whose sha256 is `<hex>`.
 * Shared by every organization (the same bytes are stored once); who may read a file is decided
 * by the path metadata in the store, never by the file's presence.
 */
export class NarFiles {
  constructor(private readonly dir: string) {}

  private pathOf(hex: string): string {
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error("not a sha256");
    return join(this.dir, "sha256", hex);
  }

  /** The size of the stored file with this hash, or undefined when there is none. */
  async size(hex: string): Promise<number | undefined> {
    try {
      return (await stat(this.pathOf(hex))).size;
    } catch {
      return undefined;
    }
  }

  open(hex: string): ReadStream {
    return createReadStream(this.pathOf(hex));
  }

  /**
   * Streams `body` to a temporary file while hashing it; keeps it under its hash when
   * `accept(hex, size)` agrees, deletes it otherwise. A failed or refused upload leaves nothing.
   */
  async put(body: AsyncIterable<Buffer>, maxBytes: number, accept: (hex: string, size: number) => boolean): Promise<{ hex: string; size: number; kept: boolean }> {
    await mkdir(join(this.dir, "tmp"), { recursive: true, mode: 0o700 });
    await mkdir(join(this.dir, "sha256"), { recursive: true, mode: 0o700 });
    const tmp = join(this.dir, "tmp", `${Date.now()}-${randomBytes(8).toString("hex")}`);
    const hash = createHash("sha256");
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > maxBytes) return done(new TooLargeError(`larger than ${maxBytes} bytes`));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(tmp, { mode: 0o600 }));
      const hex = hash.digest("hex");
      const kept = accept(hex, size);
      if (kept) await rename(tmp, this.pathOf(hex));
      return { hex, size, kept };
    } finally {
      await rm(tmp, { force: true });
    }
  }
}
