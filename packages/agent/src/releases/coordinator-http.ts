import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Fetcher } from "tuf-js";
// tuf-js stops walking root versions only on its own DownloadHTTPError (404/403).
import { DownloadHTTPError } from "tuf-js/dist/error.js";
import { pinnedRequest, rawGet, readBody, tufRootDigest, TUF_METADATA_PATH, type RawResponse } from "@flotilla/protocol/agent";

/** Where and how to reach the coordinator over plain HTTP: its URL, key pin and a session token. */
export interface CoordinatorHttp {
  url: string;
  pin: string;
  token: string;
  /** Called when the coordinator refuses the session (it expired): the agent reconnects. */
  onUnauthorized?: () => void;
}

/** A failure worth retrying later (network, coordinator busy, session expired), not a refusal. */
export class TransientError extends Error {
  override name = "TransientError";
}

/**
 * Sends a GET of `path` with the device's session through `send` and returns the response,
 * unless it is one to retry: 401 (the session expired: `onUnauthorized`), 429 and 5xx are
 * discarded and thrown as TransientError, as is a failure to reach the coordinator at all.
 */
async function retryable<R extends { statusCode?: number }>(
  http: CoordinatorHttp,
  path: string,
  signal: AbortSignal | undefined,
  send: (url: string, headers: Record<string, string>) => Promise<R>,
  discard: (res: R) => void,
  headers: Record<string, string>,
): Promise<R> {
  try {
    const res = await send(`${http.url}${path}`, { authorization: `Bearer ${http.token}`, ...headers });
    const status = res.statusCode ?? 0;
    if (status === 401 || status === 429 || status >= 500) {
      discard(res);
      if (status === 401) http.onUnauthorized?.();
      throw new TransientError(`coordinator answered HTTP ${status} for ${path}`);
    }
    return res;
  } catch (err) {
    if (err instanceof TransientError) throw err;
    if (signal?.aborted) throw err;
    throw new TransientError(`cannot reach the coordinator: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** GETs `path` from the coordinator with the device's session; throws TransientError for retryable failures. */
export function get(http: CoordinatorHttp, path: string, headers: Record<string, string> = {}, signal?: AbortSignal) {
  return retryable(
    http,
    path,
    signal,
    (url, h) => pinnedRequest({ method: "GET", url, pin: http.pin, headers: h, signal, timeoutMs: 30_000 }),
    (res) => res.resume(),
    headers,
  );
}

/**
 * As {@link get}, for a large body: rawGet (one connection, read into one reused buffer, no
 * stream machinery per chunk). The same failures are TransientError; a response without
 * Content-Length is one too.
 */
export function getRaw(http: CoordinatorHttp, path: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<RawResponse> {
  return retryable(http, path, signal, (url, h) => rawGet({ url, pin: http.pin, headers: h, signal, timeoutMs: 30_000 }), (res) => res.destroy(), headers);
}

/**
 * tuf-js's fetcher over the agent's pinned, authenticated connection: metadata comes from
 * /tuf/v1/metadata/ of the device's own organization. Refuses more than `maxLength` bytes.
 */
export class CoordinatorFetcher implements Fetcher {
  constructor(private readonly http: CoordinatorHttp) {}

  async downloadBytes(url: string, maxLength: number): Promise<Buffer> {
    const res = await get(this.http, new URL(url).pathname);
    if (res.statusCode !== 200) {
      res.resume();
      throw new DownloadHTTPError(`coordinator answered HTTP ${res.statusCode} for ${new URL(url).pathname}`, res.statusCode ?? 0);
    }
    return Buffer.from(await readBody(res, maxLength));
  }

  async downloadFile<T>(url: string, maxLength: number, handler: (file: string) => Promise<T>): Promise<T> {
    throw new Error(`downloadFile(${url}, ${maxLength}, ${handler.name}) is not used: targets are downloaded by the release manager`);
  }
}

/** tuf-js wants a base URL; only its path matters to CoordinatorFetcher. */
export function metadataBaseUrl(http: CoordinatorHttp): string {
  return `${http.url}${TUF_METADATA_PATH}`;
}

/** The organization's root a join string named: version and tufRootDigest's sha256. */
export interface ExpectedRoot {
  version: number;
  sha256: string;
}

/** The coordinator serves a root other than the one the join string named: not retried. */
export class RootRefused extends Error {
  override name = "RootRefused";
}

/**
 * Pins the organization's first trusted root in `dir/root.json`, unless one is pinned already.
 * With `expected` (the join string named the organization's root at the time), that is root
 * version `expected.version`, and only if its digest matches: a coordinator that serves another
 * root is refused (RootRefused) and nothing is pinned. Without it (old join strings, or the
 * organization had no root yet), it is 1.root.json taken on trust (trust on first use, over the
 * connection whose coordinator key was pinned at enrollment). Every later root must be signed by
 * the root before it (tuf-js). Returns false while the organization has no root yet.
 */
export async function pinRoot(http: CoordinatorHttp, dir: string, expected?: ExpectedRoot): Promise<boolean> {
  const path = join(dir, "root.json");
  try {
    await readFile(path);
    return true;
  } catch {
    // not pinned yet
  }
  const version = expected?.version ?? 1;
  const res = await get(http, `${TUF_METADATA_PATH}${version}.root.json`);
  if (res.statusCode === 404) {
    res.resume();
    if (expected) throw new RootRefused(`the coordinator does not serve the organization's root version ${version} that the join string names: refusing to trust any other`);
    return false;
  }
  if (res.statusCode !== 200) {
    res.resume();
    throw new TransientError(`coordinator answered HTTP ${res.statusCode} for root version ${version}`);
  }
  const body = await readBody(res, 512 * 1024);
  const parsed: unknown = JSON.parse(body);
  if (expected) {
    let digest: ExpectedRoot | undefined;
    try {
      digest = tufRootDigest(parsed);
    } catch {
      digest = undefined;
    }
    if (digest?.version !== expected.version || digest.sha256 !== expected.sha256) {
      throw new RootRefused(
        `the organization's root version ${version} from the coordinator does not match the join string (sha256 ${digest?.sha256 ?? "none"}, expected ${expected.sha256}): refusing it`,
      );
    }
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(`${path}.tmp`, body, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
  return true;
}
