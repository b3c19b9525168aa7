import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
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
        await file.write(chunk);
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
