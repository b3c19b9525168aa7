/**
 * The coordinator's plain-HTTP routes (web login, the Nix cache, artifacts and TUF, /metrics)
 * share these: the request and response types, answers in JSON or text, bounded bodies, method
 * checks, and the one place that turns an error into a status.
 */
import type http from "node:http";
import type http2 from "node:http2";
import { DATABASE_UNAVAILABLE, isDatabaseUnavailable, StoreConflictError } from "../store/errors.ts";

/** A request over HTTP/1.1 or HTTP/2 (the listener serves both on one port). */
export type HttpRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type HttpResponse = http.ServerResponse | http2.Http2ServerResponse;

/** A plain-HTTP route: answers its own paths and returns true, returns false for any other. */
export type HttpRoute = (req: HttpRequest, res: HttpResponse) => boolean;

/** Thrown by a route's steps to answer with a status, a one-line reason and extra headers. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** Answers with a JSON body, never cached. */
export function sendJson(res: HttpResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers });
  res.end(JSON.stringify(body));
}

/** Answers with a text body (UTF-8 plain text unless `headers` names another type), never cached. */
export function sendText(res: HttpResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...headers });
  res.end(body);
}

/** The request's path without its query. */
export function pathOf(req: HttpRequest): string {
  return (req.url ?? "").split("?")[0] ?? "";
}

/** A request header sent once, or null (absent or repeated). */
export function headerOf(req: HttpRequest, name: string): string | null {
  const v = req.headers[name];
  return typeof v === "string" ? v : null;
}

/** Reads a small request body as UTF-8; throws HttpError 413 once it passes `maxBytes`. */
export async function readBody(req: HttpRequest, maxBytes: number): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw new HttpError(413, `larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Returns the request's method when it is one of `allowed`; else throws HttpError 405 ("use GET or PUT"). */
export function checkMethod(req: HttpRequest, allowed: readonly string[]): string {
  const method = req.method ?? "GET";
  if (allowed.includes(method)) return method;
  const list = allowed.length > 1 ? `${allowed.slice(0, -1).join(", ")} or ${allowed.at(-1)}` : (allowed[0] ?? "");
  throw new HttpError(405, `use ${list}`, { allow: allowed.join(", ") });
}

/** The status an error answers with: an HttpError's own, 409 for a store conflict, else undefined. */
export function statusOf(err: unknown): number | undefined {
  if (err instanceof HttpError) return err.status;
  if (err instanceof StoreConflictError) return 409;
  if (isDatabaseUnavailable(err)) return 503;
  return undefined;
}

/**
 * Answers a request whose handling failed: a known error (see {@link statusOf}) with its status
 * and message, as `{"error": ...}` or as a text line; anything else with 500 after `report`. A
 * response already under way is cut off, so the client sees a broken transfer, not a short one.
 */
export function answerFailure(res: HttpResponse, err: unknown, format: "json" | "text", report: (err: unknown) => void): void {
  const status = statusOf(err);
  if (status === undefined) report(err);
  if (res.headersSent) return void res.destroy();
  const unavailable = !(err instanceof HttpError) && status === 503;
  const message = status === undefined ? "internal error" : unavailable ? DATABASE_UNAVAILABLE.message : (err as Error).message;
  const headers = err instanceof HttpError ? err.headers : unavailable ? { "retry-after": String(DATABASE_UNAVAILABLE.retryMs / 1000) } : {};
  if (format === "json") sendJson(res, status ?? 500, { error: message }, headers);
  else sendText(res, status ?? 500, `${message}\n`, headers);
}
