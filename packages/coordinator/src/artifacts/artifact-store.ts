import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { HttpError } from "../server/http.ts";
import { SWEEP_LIMIT, type StorageQuotas } from "./storage-quota.ts";

/** sha256 in lowercase hex. */
export const SHA256_HEX = /^[0-9a-f]{64}$/;

/** The chunk size artifacts are read and served in (fs streams default to 64 KiB). */
export const READ_BYTES = 1024 * 1024;

/** The largest artifact accepted (bytes). */
export const MAX_ARTIFACT_BYTES = 64 * 1024 ** 3;

/** Why an upload was refused; `status` is the HTTP status to answer with. */
export class UploadError extends HttpError {
  override name = "UploadError";
  constructor(message: string, status: number) {
    super(status, message);
  }
}

export type UploadState = { complete: true; length: number } | { complete: false; offset: number };

/**
 * Who uploads: an organization (`owner`, its id), and whether it has uploaded this artifact
 * before (`owns`, as the store of artifact owners says). Only then is an artifact already on
 * disk complete for it.
 */
export interface Uploader {
  owner: string;
  owns: boolean;
}

/**
 * Content-addressed artifacts in `<data-dir>/artifacts/sha256/<hex>`, shared by every
 * organization (the same bytes are stored once); which organization may use which is decided
 * by the caller: one that has uploaded the bytes itself (see {@link Uploader}), and whose
 * releases name them. Each organization uploads for itself, into
 * `uploads/<owner>-<hex>-<length>.part` (`<owner>`: a hash of its id), resumable from its
 * current size, and even when the artifact is on disk already: so it proves it has the bytes.
 * An upload becomes the artifact only once all its bytes are there and their sha256 matches;
 * when the artifact was there already, the upload is deleted instead. Streams: memory use does
 * not grow with the artifact's size.
 *
 * With `quotas`, an upload reserves its whole declared length in the organization's storage
 * quota before its first byte is written (refused with a QuotaError, HTTP 413, when it does not
 * fit), and is charged for it once complete; a refused or failed upload gives its room back, and
 * so does one abandoned for longer than {@link sweep} is told.
 */
export class ArtifactStore {
  /** Uploads (by lock key) being written or swept right now, in this process. */
  private readonly busy = new Map<string, Promise<unknown>>();

  constructor(
    private readonly dir: string,
    private readonly quotas?: StorageQuotas,
  ) {}

  /** The file of a complete artifact. */
  path(sha256: string): string {
    return join(this.dir, "sha256", sha256);
  }

  /**
   * Bytes `start` to `end` (inclusive) of a complete artifact, read in large chunks
   * ({@link READ_BYTES}) so that serving it makes few, large writes to the connection.
   */
  read(sha256: string, start: number, end: number): Readable {
    return createReadStream(this.path(sha256), { start, end, highWaterMark: READ_BYTES });
  }

  private partPath(owner: string, sha256: string, length: number): string {
    return join(this.dir, "uploads", `${ownerTag(owner)}-${sha256}-${length}.part`);
  }

  /**
   * Deletes a complete artifact's file (garbage collection: once no organization needs it);
   * returns its size, or undefined when there was none.
   */
  async remove(sha256: string): Promise<number | undefined> {
    const size = await this.size(sha256);
    if (size !== undefined) await rm(this.path(sha256), { force: true });
    return size;
  }

  /** The size of a complete artifact, or undefined. */
  async size(sha256: string): Promise<number | undefined> {
    if (!SHA256_HEX.test(sha256)) return undefined;
    try {
      return (await stat(this.path(sha256))).size;
    } catch {
      return undefined;
    }
  }

  /**
   * Whether the artifact is complete for the uploader (it owns it and it is on disk), or how
   * many bytes of the uploader's own upload have arrived.
   */
  async state(by: Uploader, sha256: string, length: number): Promise<UploadState> {
    checkArgs(sha256, length);
    if (by.owns) {
      const have = await this.size(sha256);
      if (have !== undefined) {
        if (have !== length) throw new UploadError(`artifact ${sha256} exists with length ${have}, not ${length}`, 409);
        return { complete: true, length };
      }
    }
    return { complete: false, offset: await this.uploaded(by.owner, sha256, length) };
  }

  /**
   * Throws the QuotaError an upload of `length` bytes would meet, unless the artifact is complete
   * for the uploader already: so a client learns before it sends a byte.
   */
  async admits(by: Uploader, sha256: string, length: number): Promise<void> {
    checkArgs(sha256, length);
    await this.quotas?.check(by.owner, reservationKey(sha256, length), length);
  }

  /** How many bytes of `owner`'s upload of this artifact have arrived (0: none, or invalid arguments). */
  async uploaded(owner: string, sha256: string, length: number): Promise<number> {
    if (!SHA256_HEX.test(sha256) || !Number.isSafeInteger(length) || length < 0) return 0;
    try {
      return (await stat(this.partPath(owner, sha256, length))).size;
    } catch {
      return 0;
    }
  }

  /**
   * Appends `body` to the uploader's upload at `offset`, which must be where that upload stands.
   * Bytes past `length` are refused. With `last`, the upload must then be complete: it is
   * hash-checked and becomes the artifact (or, the artifact being on disk already, is deleted),
   * or is deleted (truncated, or the bytes do not hash to `sha256`). A body that breaks off
   * without `last` keeps what arrived, to resume from. An artifact the uploader owns already is
   * complete: the body is not read.
   */
  async append(by: Uploader, sha256: string, length: number, offset: number, body: Readable, last: boolean): Promise<UploadState> {
    checkArgs(sha256, length);
    const key = lockKey(by.owner, sha256, length);
    // A client that reconnects after a broken upload may arrive before the server has noticed the
    // break; give the earlier request a moment to end.
    const earlier = this.busy.get(key);
    if (earlier) {
      const ended = await Promise.race([earlier.then(() => true, () => true), new Promise<false>((r) => setTimeout(() => r(false), 10_000).unref())]);
      if (!ended || this.busy.has(key)) throw new UploadError("another upload of this artifact is in progress", 409);
    }
    const work = this.appendNow(by, sha256, length, offset, body, last);
    this.busy.set(key, work);
    try {
      return await work;
    } finally {
      this.busy.delete(key);
    }
  }

  private async appendNow(by: Uploader, sha256: string, length: number, offset: number, body: Readable, last: boolean): Promise<UploadState> {
    const part = this.partPath(by.owner, sha256, length);
    const reservation = reservationKey(sha256, length);
    const discard = async () => {
      await rm(part, { force: true });
      await this.quotas?.release(by.owner, reservation);
    };
    try {
      const state = await this.state(by, sha256, length);
      if (state.complete) {
        body.resume();
        return state;
      }
      if (offset !== state.offset) {
        throw new UploadError(`upload offset ${offset} does not match the ${state.offset} bytes received so far`, 409);
      }
      await this.quotas?.reserve(by.owner, reservation, length);
      await mkdir(join(this.dir, "uploads"), { recursive: true, mode: 0o700 });
      const file = await open(part, "a", 0o600);
      let have = offset;
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          if (have + chunk.length > length) {
            throw new UploadError(`upload exceeds the declared length of ${length} bytes`, 413);
          }
          await file.write(chunk);
          have += chunk.length;
        }
        await file.sync();
      } finally {
        await file.close();
      }
      if (!last) return { complete: false, offset: have };
      if (have < length) {
        await discard();
        throw new UploadError(`upload truncated: received ${have} of ${length} bytes; start again`, 400);
      }
      const got = await hashFile(part);
      if (got !== sha256) {
        await discard();
        throw new UploadError(`upload does not match its sha256: expected ${sha256}, got ${got}`, 422);
      }
      if ((await this.size(sha256)) === length) {
        // Another organization's upload of the same bytes: this one proved possession; keep one copy.
        await rm(part, { force: true });
      } else {
        await mkdir(join(this.dir, "sha256"), { recursive: true, mode: 0o700 });
        await rename(part, this.path(sha256));
      }
      await this.quotas?.commit(by.owner, reservation, { kind: "artifact", key: sha256, bytes: length });
      return { complete: true, length };
    } catch (err) {
      if (err instanceof UploadError && err.status === 413) await discard();
      throw err;
    }
  }

  /**
   * Deletes uploads abandoned before `now - olderThanMs` (not begun, resumed or written to
   * since), at most a bounded number per call, and gives their reserved room back. An upload
   * being written in this process is left alone, and so is one whose file changed lately (an
   * upload through another replica sharing the data directory). Returns how many were deleted.
   */
  async sweep(olderThanMs: number, now = Date.now()): Promise<number> {
    const before = now - olderThanMs;
    let removed = 0;
    for (const r of (await this.quotas?.stale("artifact:", before, SWEEP_LIMIT)) ?? []) {
      const [, sha256 = "", length = ""] = r.uploadKey.split(":");
      if (!SHA256_HEX.test(sha256) || !/^\d{1,16}$/.test(length)) {
        await this.quotas?.release(r.orgId, r.uploadKey);
        continue;
      }
      const part = this.partPath(r.orgId, sha256, Number(length));
      const gone = await this.exclusively(lockKey(r.orgId, sha256, Number(length)), async () => {
        if (await changedSince(part, before)) return false;
        await rm(part, { force: true });
        await this.quotas?.release(r.orgId, r.uploadKey);
        return true;
      });
      if (gone) removed++;
    }
    // Files no reservation names: from before quotas, or left by a crash between two steps.
    const uploads = join(this.dir, "uploads");
    const names = await readdir(uploads).catch(() => [] as string[]);
    for (const name of names.filter((n) => n.endsWith(".part")).slice(0, SWEEP_LIMIT)) {
      const file = join(uploads, name);
      const gone = await this.exclusively(name.slice(0, -".part".length), async () => {
        if ((await changedSince(file, before)) || !(await exists(file))) return false;
        await rm(file, { force: true });
        return true;
      });
      if (gone) removed++;
    }
    return removed;
  }

  /** Runs `work` holding the upload's lock; false without running it when an upload or sweep holds it. */
  private async exclusively(key: string, work: () => Promise<boolean>): Promise<boolean> {
    if (this.busy.has(key)) return false;
    const p = work();
    this.busy.set(key, p);
    try {
      return await p;
    } finally {
      this.busy.delete(key);
    }
  }
}

/** An upload's lock key in this process, and the name of its file without `.part`. */
function lockKey(owner: string, sha256: string, length: number): string {
  return `${ownerTag(owner)}-${sha256}-${length}`;
}

/** An upload's reservation in its organization's storage quota. */
function reservationKey(sha256: string, length: number): string {
  return `artifact:${sha256}:${length}`;
}

/** Whether the file was modified at or after `since` (false when there is no file). */
async function changedSince(path: string, since: number): Promise<boolean> {
  try {
    return (await stat(path)).mtimeMs >= since;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** An organization's part of upload file names and lock keys: the first 16 hex of sha256(its id). */
function ownerTag(owner: string): string {
  return createHash("sha256").update(owner).digest("hex").slice(0, 16);
}

function checkArgs(sha256: string, length: number): void {
  if (!SHA256_HEX.test(sha256)) throw new UploadError("artifact id must be a lowercase hex sha256", 400);
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_ARTIFACT_BYTES) {
    throw new UploadError(`upload length must be an integer from 0 to ${MAX_ARTIFACT_BYTES}`, 400);
  }
}

/** sha256 (hex) of a file, streamed. */
export async function hashFile(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) h.update(chunk);
  return h.digest("hex");
}
