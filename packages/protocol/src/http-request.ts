/**
 * Plain HTTP(S) requests to a coordinator, for what does not fit RPC: streaming artifact uploads
 * and downloads with ranges, and TUF metadata. Over https the certificate is pinned to the
 * coordinator's key exactly as the RPC transport does it.
 */
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Readable } from "node:stream";
import { fetchPinnedCertificate, pinnedTlsOptions } from "./tls/index.ts";

export interface PinnedRequest {
  method: "GET" | "HEAD" | "PATCH" | "PUT" | "POST";
  /** Absolute URL. */
  url: string;
  /** keyPin() of the coordinator's key; over https the certificate must be made from it. */
  pin?: string;
  headers?: OutgoingHttpHeaders;
  /** Streamed as the request body. */
  body?: Readable | Uint8Array;
  signal?: AbortSignal;
  /** Fails when no response headers arrived within this time. */
  timeoutMs?: number;
}

const tlsCache = new Map<string, { ca: string[]; checkServerIdentity: () => undefined } | undefined>();

/** The TLS options that pin `url`'s certificate to `pin` (cached per origin and pin); undefined over http or without a pin. */
export async function tlsOptions(url: URL, pin: string | undefined) {
  if (url.protocol !== "https:" || !pin) return undefined;
  const key = `${url.origin}|${pin}`;
  if (!tlsCache.has(key)) {
    try {
      tlsCache.set(key, pinnedTlsOptions(await fetchPinnedCertificate(url.origin, pin)));
    } catch (err) {
      // A CA-issued (non-ed25519) certificate gets ordinary CA validation.
      if (!/not an ed25519 key/.test(err instanceof Error ? err.message : String(err))) throw err;
      tlsCache.set(key, undefined);
    }
  }
  return tlsCache.get(key);
}

/**
 * Sends one request and resolves with the response once its headers arrived; the caller reads
 * (or discards with `resume()`) the body. Rejects on network errors and on `signal`.
 */
export async function pinnedRequest(req: PinnedRequest): Promise<IncomingMessage> {
  const url = new URL(req.url);
  const tls = await tlsOptions(url, req.pin);
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const r = send(url, { method: req.method, headers: req.headers, signal: req.signal, ...tls }, resolve);
    r.on("error", reject);
    if (req.timeoutMs) r.setTimeout(req.timeoutMs, () => r.destroy(new Error(`no answer from ${url.origin} within ${req.timeoutMs} ms`)));
    if (req.body === undefined) r.end();
    else if (req.body instanceof Uint8Array) r.end(req.body);
    else {
      req.body.on("error", (err) => r.destroy(err));
      req.body.pipe(r);
    }
  });
}

/** Reads a whole (small) response body as text, refusing more than `maxBytes`. */
export async function readBody(res: IncomingMessage, maxBytes = 1024 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > maxBytes) {
      res.destroy();
      throw new Error(`response larger than ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}
