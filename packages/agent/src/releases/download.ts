import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat, statfs } from "node:fs/promises";
import { dirname, join } from "node:path";
import { TUF_TARGETS_PATH } from "@flotilla/protocol";
import { get, TransientError, type CoordinatorHttp } from "./coordinator-http.ts";

/** A download or hash refusal: the artifact is not what was signed. */
export class ArtifactRefused extends Error {
  override name = "ArtifactRefused";
}

export interface DownloadTarget {
  /** TUF target path: name/counter/file. */
  path: string;
  sha256: string;
  length: number;
}

/** The consistent-snapshot URL path of a target: <dir>/<sha256>.<file>. */
export function targetUrlPath(t: DownloadTarget): string {
  const slash = t.path.lastIndexOf("/");
  const dir = t.path.slice(0, slash);
  const file = t.path.slice(slash + 1);
  return `${TUF_TARGETS_PATH}${dir.split("/").map(encodeURIComponent).join("/")}/${t.sha256}.${encodeURIComponent(file)}`;
}

/**
 * The disk cannot hold the download: retried (space may return), and reported to the
 * coordinator so the device's status says why it waits.
 */
export class NoSpaceError extends TransientError {
  override name = "NoSpaceError";
  constructor(
    message: string,
    /** Bytes already on disk. */
    readonly bytesDone: number,
  ) {
    super(message);
  }
}

/** Kept free beyond a download, for the outbox, the log buffer and the agent's state files. */
const RESERVE_BYTES = 1024 * 1024;

const mib = (n: number) => `${(n / (1024 * 1024)).toFixed(1)} MiB`;

/** Refuses to start writing `need` bytes into `dir` when the disk cannot hold them and the reserve. */
async function ensureSpace(dir: string, need: number, path: string, done: number): Promise<void> {
  const s = await statfs(dir);
  const free = s.bavail * s.bsize;
  if (free < need + RESERVE_BYTES) {
    throw new NoSpaceError(`not enough disk space to download ${path}: ${mib(need)} more needed, ${mib(Math.max(0, free - RESERVE_BYTES))} free in ${dir}`, done);
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

/**
 * Downloads a signed target into `<staging>/<sha256>`: appends to `<sha256>.part` from where
 * an earlier attempt stopped (HTTP Range), never accepts more than the signed length, then
 * checks the sha256 and renames. A mismatch deletes the part and throws ArtifactRefused.
 * `bytesPerSecond` (0: unlimited) caps the rate.
 */
export async function downloadTarget(opts: {
  http: CoordinatorHttp;
  target: DownloadTarget;
  staging: string;
  bytesPerSecond: number;
  signal: AbortSignal;
  progress(done: number, total: number): void;
  verifying(): void;
}): Promise<string> {
  const { target } = opts;
  const final = join(opts.staging, target.sha256);
  const part = `${final}.part`;
  if ((await sizeOf(final)) === target.length) return final;
  await mkdir(opts.staging, { recursive: true, mode: 0o700 });
  let offset = (await sizeOf(part)) ?? 0;
  if (offset > target.length) {
    await rm(part, { force: true });
    offset = 0;
  }
  opts.progress(offset, target.length);
  if (offset < target.length) {
    await ensureSpace(opts.staging, target.length - offset, target.path, offset);
    const res = await get(opts.http, targetUrlPath(target), offset > 0 ? { range: `bytes=${offset}-` } : {}, opts.signal);
    if (res.statusCode === 404) {
      res.resume();
      throw new ArtifactRefused(`the coordinator does not have the artifact of ${target.path}`);
    }
    if (res.statusCode === 200 && offset > 0) offset = 0; // the server ignored the range: start over
    else if (res.statusCode !== 200 && res.statusCode !== 206) {
      res.resume();
      throw new TransientError(`coordinator answered HTTP ${res.statusCode} for ${target.path}`);
    }
    const file = await open(part, offset === 0 ? "w" : "a", 0o600);
    const started = Date.now();
    let received = 0;
    let lastReport = 0;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        if (offset + received + chunk.length > target.length) {
          res.destroy();
          throw new ArtifactRefused(`the artifact of ${target.path} is longer than its signed length of ${target.length} bytes`);
        }
        try {
          await file.write(chunk);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
          res.destroy();
          throw new NoSpaceError(`no space left on the device's disk while downloading ${target.path} (${mib(offset + received)} of ${mib(target.length)} done)`, offset + received);
        }
        received += chunk.length;
        const now = Date.now();
        if (now - lastReport > 1000) {
          lastReport = now;
          opts.progress(offset + received, target.length);
        }
        if (opts.bytesPerSecond > 0) {
          const due = started + (received / opts.bytesPerSecond) * 1000;
          if (due > now) await new Promise((r) => setTimeout(r, due - now));
        }
      }
      await file.sync();
    } finally {
      await file.close();
    }
    if (offset + received < target.length) throw new TransientError(`download of ${target.path} broke off at ${offset + received} of ${target.length} bytes`);
    opts.progress(target.length, target.length);
  }
  opts.verifying();
  const h = createHash("sha256");
  for await (const chunk of createReadStream(part) as AsyncIterable<Buffer>) h.update(chunk);
  const got = h.digest("hex");
  if (got !== target.sha256) {
    await rm(part, { force: true });
    throw new ArtifactRefused(`the artifact of ${target.path} does not match its signed sha256: expected ${target.sha256}, got ${got}`);
  }
  await mkdir(dirname(final), { recursive: true });
  await rename(part, final);
  return final;
}
