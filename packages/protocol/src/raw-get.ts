/**
 * A lean HTTP/1.1 GET for large bodies (artifact downloads): one connection per request, its
 * bytes read into one reused buffer (net.Socket's `onread`) and handed on as they arrive, with
 * none of Node's stream and HTTP parser machinery per chunk. Over TLS every 16 KiB record costs
 * Node's HTTP client a dozen JavaScript calls (the socket's Readable, the parser, the response's
 * Readable, their events); here it costs one. The head is parsed here: a status line, headers,
 * and a body of exactly Content-Length bytes (what coordinators and ordinary reverse proxies send
 * for a file). A response without Content-Length, or chunked, is refused with a clear error.
 */
import { EventEmitter } from "node:events";
import { connect as netConnect, isIP, type OnReadOpts, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import { tlsOptions } from "./http-request.ts";

/** Size of the buffer the socket reads into; a TLS record is at most 16 KiB. */
const READ_BYTES = 64 * 1024;
/** Largest response head accepted. */
const MAX_HEAD_BYTES = 32 * 1024;

export interface RawGetRequest {
  /** Absolute URL, http: or https:. */
  url: string;
  /** keyPin() of the coordinator's key; over https the certificate must be made from it. */
  pin?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Fails when the connection is silent this long (no head, or no body bytes), in ms. */
  timeoutMs?: number;
}

/**
 * A response whose head arrived. Its body comes as 'data' events, each a chunk that is valid only
 * during the event (the buffer is reused for the next read: copy what you keep), then 'end' after
 * Content-Length bytes, or 'close' without 'end' when the connection broke off first (for
 * whatever reason: the caller sees the short count in `bytesReceived`; there is no 'error').
 * No 'data' is emitted before the first listener for it is added (bytes that came with the head
 * wait for it). pause() and resume() stop and restart reading the socket; a chunk already
 * decrypted may still come after pause().
 */
export class RawResponse extends EventEmitter {
  /** Chunks received before anyone listened for 'data' (copies). */
  private early: Buffer[] | undefined = [];
  private received = 0;
  private finished = false;
  private socketClosed = false;
  private closeEmitted = false;

  constructor(
    private readonly socket: Socket,
    readonly statusCode: number,
    /** Header names in lower case; a repeated header keeps its last value. */
    readonly headers: ReadonlyMap<string, string>,
    /** The body's length (Content-Length). */
    readonly contentLength: number,
  ) {
    super();
    this.on("newListener", (event) => {
      if (event === "data" && this.early) queueMicrotask(() => this.flushEarly());
    });
  }

  /** Bytes of the body so far. */
  get bytesReceived(): number {
    return this.received;
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    if (!this.finished) this.socket.resume();
  }

  /** Closes the connection; the body ends here ('close' without 'end'). */
  destroy(err?: Error): void {
    this.socket.destroy(err);
  }

  /** @internal The socket read `n` bytes of the body into `buf`. */
  body(buf: Buffer): void {
    if (this.finished) return;
    let chunk = buf;
    if (this.received + chunk.length > this.contentLength) chunk = chunk.subarray(0, this.contentLength - this.received);
    this.received += chunk.length;
    if (this.early) this.early.push(Buffer.from(chunk));
    else if (chunk.length > 0) this.emit("data", chunk);
    if (this.received === this.contentLength) this.finish();
  }

  /** @internal The connection closed. */
  closed(): void {
    this.socketClosed = true;
    if (!this.early) this.emitClose();
  }

  private emitClose(): void {
    if (this.closeEmitted) return;
    this.closeEmitted = true;
    this.emit("close");
  }

  private finish(): void {
    this.finished = true;
    if (!this.early) this.emit("end");
    this.socket.destroy();
  }

  private flushEarly(): void {
    const early = this.early;
    if (!early) return;
    this.early = undefined;
    for (const chunk of early) this.emit("data", chunk);
    if (this.finished) this.emit("end");
    if (this.socketClosed) this.emitClose();
  }
}

/** Connects to the URL's host: TCP for http:, TLS pinned to `pin` (as pinnedRequest does) for https:. */
async function connect(url: URL, pin: string | undefined, onread: OnReadOpts): Promise<Socket> {
  const https = url.protocol === "https:";
  if (!https && url.protocol !== "http:") throw new Error(`cannot GET ${url.href}: not an http or https URL`);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port) || (https ? 443 : 80);
  if (!https) return netConnect({ host, port, onread });
  const tls = await tlsOptions(url, pin);
  // tls.connect takes `onread` as net.connect does (Node's documentation), though @types/node omits it.
  const options: ConnectionOptions & { onread: OnReadOpts } = { host, port, servername: isIP(host) ? undefined : host, ALPNProtocols: ["http/1.1"], ...tls, onread };
  return tlsConnect(options);
}

/** Header values must not carry line breaks (they would end the header and start another). */
function headerLines(headers: Record<string, string>): string {
  let out = "";
  for (const [name, value] of Object.entries(headers)) {
    if (!/^[A-Za-z0-9-]+$/.test(name) || /[\r\n]/.test(value)) throw new Error(`invalid request header ${JSON.stringify(name)}`);
    out += `${name}: ${value}\r\n`;
  }
  return out;
}

/** Parses a response head (without its final blank line); throws for what is not HTTP/1.x. */
function parseHead(text: string): { status: number; headers: Map<string, string> } {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0] ?? "");
  if (!m) throw new Error(`not an HTTP/1.1 response: ${JSON.stringify((lines[0] ?? "").slice(0, 80))}`);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`malformed response header line ${JSON.stringify(line.slice(0, 80))}`);
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status: Number(m[1]), headers };
}

/**
 * Sends `GET url` on a connection of its own and resolves once the response head arrived. Rejects
 * on network errors, a head that is not HTTP/1.1 or whose body has no Content-Length (or is
 * chunked), silence for `timeoutMs`, and `signal`.
 */
export async function rawGet(req: RawGetRequest): Promise<RawResponse> {
  const url = new URL(req.url);
  const request = `GET ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n${headerLines(req.headers ?? {})}connection: close\r\n\r\n`;
  req.signal?.throwIfAborted();
  const readBuffer = Buffer.allocUnsafe(READ_BYTES);
  let head: Buffer | undefined = Buffer.alloc(0);
  let response: RawResponse | undefined;
  let settle: { resolve(r: RawResponse): void; reject(err: Error): void } | undefined;
  const answered = new Promise<RawResponse>((resolve, reject) => (settle = { resolve, reject }));
  let socket: Socket | undefined;
  const fail = (err: Error) => {
    socket?.destroy(err);
    settle?.reject(err);
  };
  const onBytes = (n: number, buf: Uint8Array): boolean => {
    if (response) {
      response.body(Buffer.from(buf.buffer, buf.byteOffset, n));
      return true;
    }
    head = Buffer.concat([head!, buf.subarray(0, n)]);
    const end = head.indexOf("\r\n\r\n");
    if (end < 0) {
      if (head.length > MAX_HEAD_BYTES) fail(new Error(`the response head from ${url.origin} is longer than ${MAX_HEAD_BYTES} bytes`));
      return true;
    }
    let parsed: { status: number; headers: Map<string, string> };
    try {
      parsed = parseHead(head.subarray(0, end).toString("latin1"));
    } catch (err) {
      fail(err instanceof Error ? err : new Error(String(err)));
      return true;
    }
    const te = parsed.headers.get("transfer-encoding");
    const cl = parsed.headers.get("content-length");
    if ((te !== undefined && te.toLowerCase() !== "identity") || cl === undefined || !/^\d{1,15}$/.test(cl)) {
      fail(new Error(`the response from ${url.origin} (HTTP ${parsed.status}) has no Content-Length${te ? ` (transfer-encoding: ${te})` : ""}: cannot read its body`));
      return true;
    }
    response = new RawResponse(socket!, parsed.status, parsed.headers, Number(cl));
    const rest = head.subarray(end + 4);
    head = undefined;
    if (rest.length > 0) response.body(rest);
    settle?.resolve(response);
    settle = undefined;
    return true;
  };
  socket = await connect(url, req.pin, { buffer: readBuffer, callback: onBytes });
  socket.on("error", (err) => (response ? undefined : settle?.reject(err)));
  socket.on("close", () => {
    if (response) response.closed();
    else settle?.reject(new Error(`the connection to ${url.origin} closed before the response head arrived`));
  });
  if (req.timeoutMs) socket.setTimeout(req.timeoutMs, () => socket.destroy(new Error(`no answer from ${url.origin} within ${req.timeoutMs} ms`)));
  const onAbort = () => socket.destroy(req.signal?.reason instanceof Error ? req.signal.reason : new Error("aborted"));
  if (req.signal?.aborted) onAbort(); // while it connected
  req.signal?.addEventListener("abort", onAbort, { once: true });
  socket.once("close", () => req.signal?.removeEventListener("abort", onAbort));
  socket.write(request);
  return answered;
}
