import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat, statfs, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { TUF_TARGETS_PATH, type RawResponse } from "@flotilla/protocol/agent";
import { withOptimizingCompiler } from "@flotilla/protocol/agent-flags";
import { getRaw, TransientError, type CoordinatorHttp } from "./coordinator-http.ts";

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

/** The size of the writes a download makes: chunks from the network are gathered up to this. */
export const WRITE_BYTES = 1024 * 1024;

/** Reads and hashes the first `length` bytes of `path` into `h` (a resumed download's prefix). */
async function hashPrefix(h: Hash, path: string, length: number): Promise<void> {
  if (length === 0) return;
  let n = 0;
  for await (const chunk of createReadStream(path, { start: 0, end: length - 1, highWaterMark: WRITE_BYTES }) as AsyncIterable<Buffer>) {
    h.update(chunk);
    n += chunk.length;
  }
  if (n !== length) throw new TransientError(`${path} shrank while it was read: ${n} of ${length} bytes`);
}

/** Writes every byte of `buf` at the end of `file` (opened for appending), however many calls it takes. */
async function writeAll(file: FileHandle, buf: Buffer): Promise<void> {
  while (buf.length > 0) {
    const { bytesWritten } = await file.write(buf, 0, buf.length);
    buf = buf.subarray(bytesWritten);
  }
}

/**
 * Reads the response body into `file` (opened for appending, `offset` bytes in it already) and
 * `h`: chunks are copied into buffers of WRITE_BYTES that are reused for the whole download (a
 * fresh 1 MiB buffer per write costs page faults and garbage collection, more than the copy),
 * each hashed as it is handed to the disk, one write in flight while the next is gathered; the
 * response is paused while two are (and while the rate cap says to wait). A chunk is only valid
 * during its 'data' event (rawGet reuses its read buffer): it is copied at once. Resolves with the
 * bytes received once every write is done.
 */
function receive(
  res: RawResponse,
  file: FileHandle,
  h: Hash,
  opts: { offset: number; target: DownloadTarget; bytesPerSecond: number; progress(done: number): void },
): Promise<number> {
  const { offset, target } = opts;
  const started = Date.now();
  let received = 0;
  let written = 0;
  let lastReport = 0;
  /** Buffers whose write is done, for the next ones to gather into (three are made: one filling, two writes). */
  const free: Buffer[] = [];
  let buf: Buffer | undefined;
  let filled = 0;
  /** The writes so far, in order; rejects with the first failure. */
  let writes: Promise<void> = Promise.resolve();
  let writing = 0;
  let paused = 0;
  return new Promise<number>((resolve, reject) => {
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      res.destroy();
      // A write still running must end before the caller closes the file.
      void writes.catch(() => {}).then(() => reject(err));
    };
    const noSpace = (err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== "ENOSPC") return err;
      return new NoSpaceError(`no space left on the device's disk while downloading ${target.path} (${mib(offset + written)} of ${mib(target.length)} done)`, offset + written);
    };
    /** Pauses the response until `until` settles (several reasons may overlap). */
    const hold = (until: Promise<unknown>) => {
      if (paused++ === 0) res.pause();
      until.then(
        () => {
          if (--paused === 0 && !failed) res.resume();
        },
        fail,
      );
    };
    const flush = () => {
      if (buf === undefined || filled === 0) return;
      const full = buf;
      const data = full.subarray(0, filled);
      // Hashed here, in order, one call per write rather than one per network chunk.
      h.update(data);
      buf = undefined;
      filled = 0;
      const before = writes;
      writing++;
      writes = before.then(() => writeAll(file, data)).then(
        () => {
          written += data.length;
          writing--;
          free.push(full);
        },
        (err: unknown) => {
          throw noSpace(err);
        },
      );
      writes.catch(fail);
      // One write running and this one waiting: enough in memory until the first is done.
      if (writing > 1) hold(before);
    };
    /** Copies `chunk` into the write buffers, handing each full one to the disk. */
    const gather = (chunk: Buffer) => {
      for (let at = 0; at < chunk.length; ) {
        buf ??= free.pop() ?? Buffer.allocUnsafeSlow(WRITE_BYTES);
        const n = chunk.copy(buf, filled, at);
        filled += n;
        at += n;
        if (filled === buf.length) flush();
      }
    };
    /** Set at 'end' (or 'close'): a chunk after it is not taken (the hash is being finished). */
    let ended = false;
    res.on("data", (chunk: Buffer) => {
      if (failed || ended) return;
      if (offset + received + chunk.length > target.length) {
        return fail(new ArtifactRefused(`the artifact of ${target.path} is longer than its signed length of ${target.length} bytes`));
      }
      gather(chunk);
      received += chunk.length;
      const now = Date.now();
      if (now - lastReport > 1000) {
        lastReport = now;
        opts.progress(offset + received);
      }
      if (opts.bytesPerSecond > 0) {
        const due = started + (received / opts.bytesPerSecond) * 1000;
        if (due > now) hold(new Promise((r) => setTimeout(r, due - now)));
      }
    });
    res.on("error", fail);
    // 'end' after the whole body; 'close' also when the connection broke off first (then the
    // caller finds fewer bytes than signed, and resumes later from what was written).
    const done = () => {
      if (failed || ended) return;
      ended = true;
      flush();
      writes.then(() => resolve(received), fail);
    };
    res.on("end", done);
    res.on("close", done);
  });
}

/**
 * Downloads a signed target into `<staging>/<sha256>` in one pass: the bytes are hashed as they
 * arrive and written in large writes (WRITE_BYTES, one write in flight while the next is
 * gathered), never more than the signed length is accepted, and at the end the length and
 * sha256 are checked with no second read of the file. A download that broke off resumes
 * (HTTP Range) by appending to `<sha256>.part`: the bytes already there are read and hashed
 * once, before the rest arrives. A mismatch deletes the part and throws ArtifactRefused.
 * `bytesPerSecond` (0: unlimited) caps the rate. Runs with V8's optimising compiler on
 * (withOptimizingCompiler: the agent idles without it, and a large download's per-chunk
 * JavaScript costs a fifth more CPU without it).
 */
export function downloadTarget(opts: DownloadOptions): Promise<string> {
  return withOptimizingCompiler(() => download(opts));
}

export interface DownloadOptions {
  http: CoordinatorHttp;
  target: DownloadTarget;
  staging: string;
  bytesPerSecond: number;
  signal: AbortSignal;
  progress(done: number, total: number): void;
  verifying(): void;
}

async function download(opts: DownloadOptions): Promise<string> {
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
  const h = createHash("sha256");
  if (offset === target.length) {
    // Complete from an earlier attempt that stopped before its check: hashed here, once.
    opts.verifying();
    await hashPrefix(h, part, offset);
  } else {
    await ensureSpace(opts.staging, target.length - offset, target.path, offset);
    const res = await getRaw(opts.http, targetUrlPath(target), offset > 0 ? { range: `bytes=${offset}-` } : {}, opts.signal);
    if (res.statusCode === 404) {
      res.destroy();
      throw new ArtifactRefused(`the coordinator does not have the artifact of ${target.path}`);
    }
    if (res.statusCode === 200 && offset > 0) offset = 0; // the server ignored the range: start over
    else if (res.statusCode !== 200 && res.statusCode !== 206) {
      res.destroy();
      throw new TransientError(`coordinator answered HTTP ${res.statusCode} for ${target.path}`);
    }
    if (offset > 0) {
      try {
        await hashPrefix(h, part, offset);
      } catch (err) {
        res.destroy();
        throw err;
      }
    }
    const file = await open(part, offset === 0 ? "w" : "a", 0o600);
    let received = 0;
    try {
      received = await receive(res, file, h, {
        offset,
        target,
        bytesPerSecond: opts.bytesPerSecond,
        progress: (done) => opts.progress(done, target.length),
      });
      await file.sync();
    } finally {
      await file.close();
    }
    if (offset + received < target.length) throw new TransientError(`download of ${target.path} broke off at ${offset + received} of ${target.length} bytes`);
    opts.progress(target.length, target.length);
    opts.verifying();
  }
  const got = h.digest("hex");
  if (got !== target.sha256) {
    await rm(part, { force: true });
    throw new ArtifactRefused(`the artifact of ${target.path} does not match its signed sha256: expected ${target.sha256}, got ${got}`);
  }
  await mkdir(dirname(final), { recursive: true });
  await rename(part, final);
  return final;
}
