import { createHash, randomBytes } from "node:crypto";
import { createReadStream, type ReadStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { QuotaError, SWEEP_LIMIT, type StorageQuotas } from "../artifacts/storage-quota.ts";
import { fromNixBase32 } from "./nix-format.ts";

/** Thrown when an upload exceeds the size limit. */
export class TooLargeError extends Error {
  override name = "TooLargeError";
}

/** How much more room a streamed upload reserves each time it outgrows what it holds. */
const RESERVE_STEP = 8 * 1024 * 1024;

/**
 * Who uploads a NAR: the organization charged for it, the size its request declares and the
 * sha256 (hex) its name promises, if any. A NAR the organization is charged for already is not
 * held to its quota again (a retried `nix copy` sends it again).
 */
export interface NarUploader {
  orgId: string;
  declared?: number;
  expected?: string;
}

/**
 * NAR files, content-addressed: `<dir>/sha256/<hex>` holds the file whose sha256 is `<hex>`.
 * Shared by every organization (the same bytes are stored once); who may read a file is decided
 * by the path metadata in the store, never by the file's presence.
 *
 * With `quotas`, an upload holds room in its organization's storage quota before its bytes are
 * written: its declared size up front, or, streamed without one, more as they arrive; it is
 * refused (QuotaError, HTTP 413) the moment they would not fit, and charged once kept.
 */
export class NarFiles {
  /** Temporary files of uploads under way in this process. */
  private readonly inFlight = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly quotas?: StorageQuotas,
  ) {}

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

  /** Deletes the stored file (garbage collection: once no organization needs it); returns its size, or undefined when there was none. */
  async remove(hex: string): Promise<number | undefined> {
    const size = await this.size(hex);
    if (size !== undefined) await rm(this.pathOf(hex), { force: true });
    return size;
  }

  open(hex: string): ReadStream {
    return createReadStream(this.pathOf(hex));
  }

  /**
   * Streams `body` to a temporary file while hashing it; keeps it under its hash when
   * `accept(hex, size)` agrees, deletes it otherwise. A failed or refused upload leaves nothing,
   * and holds no room in the quota. When refused, the rest of `body` is left unread (not
   * destroyed), so the server can still answer.
   */
  async put(
    body: AsyncIterable<Buffer>,
    maxBytes: number,
    accept: (hex: string, size: number) => boolean,
    by?: NarUploader,
  ): Promise<{ hex: string; size: number; kept: boolean }> {
    const name = `${Date.now()}-${randomBytes(8).toString("hex")}`;
    const key = `nar:${name}`;
    // Bytes sent again cost nothing; more than the stored NAR's cannot be them.
    const storedSize = by?.expected !== undefined && (await this.quotas?.charged(by.orgId, "nar", by.expected)) ? await this.size(by.expected) : undefined;
    if (storedSize !== undefined) maxBytes = Math.min(maxBytes, storedSize);
    const quotas = by && storedSize === undefined ? this.quotas : undefined;
    let reserved = 0;
    const hold = async (bytes: number, atLeast: number) => {
      try {
        await quotas?.reserve(by!.orgId, key, bytes);
        reserved = bytes;
      } catch (err) {
        if (!(err instanceof QuotaError) || bytes <= atLeast) throw err;
        await hold(atLeast, atLeast);
      }
    };
    if (by?.declared !== undefined && by.declared > maxBytes) throw new TooLargeError(`larger than ${maxBytes} bytes`);
    if (by?.declared !== undefined) await hold(by.declared, by.declared);

    this.inFlight.add(name);
    const tmp = join(this.dir, "tmp", name);
    try {
      await mkdir(join(this.dir, "tmp"), { recursive: true, mode: 0o700 });
      await mkdir(join(this.dir, "sha256"), { recursive: true, mode: 0o700 });
      const hash = createHash("sha256");
      let size = 0;
      const source = readKeepingOpen(body);
      async function* metered(): AsyncGenerator<Buffer> {
        for await (const chunk of source) {
          size += chunk.length;
          if (size > maxBytes) throw new TooLargeError(`larger than ${maxBytes} bytes`);
          if (quotas && size > reserved) await hold(Math.min(maxBytes, Math.max(size, reserved + RESERVE_STEP)), size);
          hash.update(chunk);
          yield chunk;
        }
      }
      // Opened before the first byte, so the file exists before anything can fail: a stream that
      // opened it lazily could create it after the cleanup below had run.
      const out = await open(tmp, "w", 0o600);
      try {
        await pipeline(metered, out.createWriteStream());
      } finally {
        await out.close().catch(() => undefined);
      }
      const hex = hash.digest("hex");
      const kept = accept(hex, size);
      if (kept) {
        await rename(tmp, this.pathOf(hex));
        await quotas?.commit(by!.orgId, key, { kind: "nar", key: hex, bytes: size });
      } else {
        await quotas?.release(by!.orgId, key);
      }
      return { hex, size, kept };
    } catch (err) {
      // Should this fail too, the sweep gives the room back.
      await quotas?.release(by!.orgId, key).catch(() => undefined);
      throw err;
    } finally {
      await rm(tmp, { force: true });
      this.inFlight.delete(name);
    }
  }

  /**
   * Deletes the temporary files of uploads abandoned before `now - olderThanMs` (a crash, or a
   * request that never ended) and gives their reserved room back, a bounded number per call;
   * files written to lately are left alone. Returns how many files were deleted.
   */
  async sweep(olderThanMs: number, now = Date.now()): Promise<number> {
    const before = now - olderThanMs;
    let removed = 0;
    for (const r of (await this.quotas?.stale("nar:", before, SWEEP_LIMIT)) ?? []) {
      const name = r.uploadKey.slice("nar:".length);
      if (this.inFlight.has(name)) continue;
      const tmp = join(this.dir, "tmp", name);
      const mtime = await mtimeOf(tmp);
      if (mtime !== undefined && mtime >= before) continue;
      if (mtime !== undefined && /^[0-9]+-[0-9a-f]+$/.test(name)) {
        await rm(tmp, { force: true });
        removed++;
      }
      await this.quotas?.release(r.orgId, r.uploadKey);
    }
    const names = await readdir(join(this.dir, "tmp")).catch(() => [] as string[]);
    for (const name of names.slice(0, SWEEP_LIMIT)) {
      if (this.inFlight.has(name)) continue;
      const mtime = await mtimeOf(join(this.dir, "tmp", name));
      if (mtime === undefined || mtime >= before) continue;
      await rm(join(this.dir, "tmp", name), { force: true });
      removed++;
    }
    return removed;
  }
}

/** The sha256 (hex) a NAR's file name (`<base32>` of `nar/<base32>.nar`) promises, or undefined if it is no such name. */
export function narHexOf(base32: string): string | undefined {
  try {
    return Buffer.from(fromNixBase32(base32, 32)).toString("hex");
  } catch {
    return undefined;
  }
}

async function mtimeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Iterates a stream without destroying it when iteration stops early (a plain iterable as is). */
function readKeepingOpen(body: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  const stream = body as Partial<Readable>;
  return typeof stream.iterator === "function" ? (stream.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) : body;
}
