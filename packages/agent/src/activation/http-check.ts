/**
 * One GET of a health URL, with Node's `http` and `https` clients rather than `fetch`: `fetch` is
 * undici, which the agent otherwise never loads (6 MiB resident, and it stays loaded once used),
 * and which needs WebAssembly (its HTTP parser) that an agent run with `--jitless` does not have.
 */
import { get as httpGet, type IncomingMessage } from "node:http";
import { get as httpsGet } from "node:https";

/** Redirects followed when asked to follow them, as `fetch` does (it stops at 20). */
const MAX_REDIRECTS = 20;

export interface HttpCheckResult {
  /** The status of the last response. */
  status: number;
  /** The URL that answered it (after redirects, when followed). */
  url: string;
}

/** Why a GET did not get an answer: the network error's code (ECONNREFUSED, ...), or its message. */
export class HttpCheckError extends Error {
  override name = "HttpCheckError";
  constructor(
    message: string,
    /** Whether the time given ran out (or `signal` was aborted for a TimeoutError). */
    readonly timedOut: boolean,
  ) {
    super(message);
  }
}

function once(url: URL, signal: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const get = url.protocol === "https:" ? httpsGet : url.protocol === "http:" ? httpGet : undefined;
    if (!get) return reject(new HttpCheckError(`unsupported URL scheme ${url.protocol}`, false));
    const req = get(url, { signal, headers: { "user-agent": "flotilla-agent health check" } }, resolve);
    req.on("error", (err: NodeJS.ErrnoException) => {
      const reason = signal.reason as { name?: string } | undefined;
      if (signal.aborted) reject(new HttpCheckError(reason?.name === "TimeoutError" ? "timed out" : "aborted", reason?.name === "TimeoutError"));
      else reject(new HttpCheckError(err.code ?? err.message, false));
    });
  });
}

/**
 * GETs `url` and resolves with the status once the headers arrived (the body is discarded).
 * With `follow`, redirects (3xx with a Location) are followed, at most MAX_REDIRECTS; without, a
 * redirect is the answer. Rejects with HttpCheckError when no answer came.
 */
export async function httpCheck(url: string, signal: AbortSignal, follow: boolean): Promise<HttpCheckResult> {
  let at: URL;
  try {
    at = new URL(url);
  } catch {
    throw new HttpCheckError(`invalid URL ${JSON.stringify(url)}`, false);
  }
  for (let hops = 0; ; hops++) {
    const res = await once(at, signal);
    // The body is not read: the status says it all.
    res.on("error", () => {});
    res.destroy();
    const status = res.statusCode ?? 0;
    const location = res.headers.location;
    if (!follow || status < 300 || status > 399 || location === undefined) return { status, url: at.href };
    if (hops >= MAX_REDIRECTS) throw new HttpCheckError(`more than ${MAX_REDIRECTS} redirects`, false);
    at = new URL(location, at);
  }
}
