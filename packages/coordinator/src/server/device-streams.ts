/**
 * The server streams every connected device holds open (Watch, and tunnel Listen), served beside
 * Connect for the one form agents use: the Connect protocol, binary, over HTTP/2.
 *
 * Connect runs each server stream through a pipeline of async generators (split, decompress and
 * parse the request; serialize, envelope, compress and join the answers; catch and finish), a
 * `HandlerContext` with its `Headers` and linked `AbortController`s, and the compatibility
 * request and response objects. A device's Watch stream is open for as long as the device is
 * connected and sends a keep-alive every 15 s, so a fleet pays for that machinery once per device
 * in memory and once per keep-alive in CPU. A heap snapshot of a coordinator holding 2,000
 * simulated devices (one Watch stream each) counted 18 generators, 108 closures and 99 contexts
 * per device, most of them that pipeline's. Here a stream is one generator (the method's own),
 * one AbortController and the HTTP/2 stream it writes to.
 *
 * What it serves is the method's own implementation, the same function its Connect handler runs,
 * with the same authentication (a device session, checked as the authorization interceptor
 * checks it), the same store-error mapping, and the same wire format: Connect's envelopes and
 * end-of-stream message, made with Connect's own serializers. Any other form of the same call
 * (gRPC, gRPC-web, JSON, HTTP/1.1, a compressed request) is left to Connect.
 */
import { create, fromBinary, isMessage, toBinary, type DescMessage, type DescMethodServerStreaming, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { contentTypeStreamProto, endStreamFlag, endStreamToJson, parseTimeout } from "@connectrpc/connect/protocol-connect";
import { promisify } from "node:util";
import { gzip as gzipCallback } from "node:zlib";
import type http2 from "node:http2";
import { AUTHORIZATION_HEADER, drained } from "@flotilla/protocol";
import { requireDevice, resolvePrincipal } from "../access/interceptor.ts";
import { CSRF_HEADER } from "../access/cookies.ts";
import type { DevicePrincipal } from "../access/principal.ts";
import { ruleFor } from "../access/policy.ts";
import type { Store } from "../store/index.ts";
import { headerOf, pathOf, type HttpRequest, type HttpResponse } from "./http.ts";
import type { ShutdownSignal } from "./shutdown-signal.ts";
import { fromStoreError } from "./store-errors.ts";

const gzip = promisify(gzipCallback);

/** Answers of at least this many bytes are compressed for a client that accepts gzip (Connect's default). */
const COMPRESS_MIN_BYTES = 1024;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A server-streaming method a device calls, and what it answers for one authenticated device. */
export interface DeviceStream<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> {
  method: DescMethodServerStreaming<I, O>;
  serve(device: DevicePrincipal, req: MessageShape<I>, signal: AbortSignal): AsyncIterable<MessageInitShape<O>>;
}

/** Declares a {@link DeviceStream} with its types checked against the method. */
export function deviceStream<I extends DescMessage, O extends DescMessage>(
  method: DescMethodServerStreaming<I, O>,
  serve: (device: DevicePrincipal, req: MessageShape<I>, signal: AbortSignal) => AsyncIterable<MessageInitShape<O>>,
): DeviceStream {
  return { method, serve } as unknown as DeviceStream;
}

export interface DeviceStreamOptions {
  store: Store;
  /** Ends every open stream when the coordinator stops. */
  shutdown: ShutdownSignal;
  /** Largest request or answer message, in bytes (`--max-message-bytes`). */
  maxMessageBytes: number;
}

/** The end of a stream: Connect's end-stream message, with the error if the stream failed. */
function endStream(error: ConnectError | undefined): Uint8Array {
  // The error's own metadata goes in as the stream's trailers.
  return encodeEnvelope(endStreamFlag, Buffer.from(JSON.stringify(endStreamToJson(new Headers(), error, undefined))));
}

/**
 * The one message of a server-streaming request body: exactly one uncompressed envelope that
 * fits `maxBytes`, and nothing after it.
 */
function singleMessage(body: Buffer, maxBytes: number): Uint8Array {
  if (body.length < 5) throw new ConnectError("protocol error: the request holds no message", Code.InvalidArgument);
  const flags = body[0]!;
  const length = body.readUInt32BE(1);
  if (length > maxBytes) throw new ConnectError(`message size ${length} is larger than configured readMaxBytes ${maxBytes}`, Code.ResourceExhausted);
  if (flags !== 0) throw new ConnectError(`protocol error: unexpected envelope flags ${flags}`, Code.InvalidArgument);
  if (body.length !== 5 + length) throw new ConnectError("protocol error: the request must hold exactly one message", Code.InvalidArgument);
  return body.subarray(5);
}

/**
 * Reads the whole request body; fails once it passes `maxBytes`. The stream is left open either
 * way (an async iterator over it would destroy it on the way out), so the refusal can still be
 * written to it; what the client sends after that is read and dropped.
 */
function readBody(stream: http2.ServerHttp2Stream, maxBytes: number, signal: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: unknown) => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      signal.removeEventListener("abort", onAbort);
      if (err === undefined) return resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
      stream.resume();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) done(new ConnectError(`message size is larger than configured readMaxBytes ${maxBytes - 5}`, Code.ResourceExhausted));
      else chunks.push(chunk);
    };
    const onEnd = () => done();
    const onAbort = () => done(signal.reason);
    stream.on("data", onData);
    stream.once("end", onEnd);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Waits until `stream` takes more after a write returned false, or is gone, or the call ended
 * (its deadline, shutdown): a device that reads nothing is not waited for past its call's end.
 */
function writable(stream: http2.ServerHttp2Stream, signal: AbortSignal): Promise<void> {
  if (stream.destroyed || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    signal.addEventListener("abort", done, { once: true });
    void drained(stream).then(done);
  });
}

/** Whether this request is the form served here; any other is left to Connect. */
function isLeanForm(req: HttpRequest): boolean {
  if (req.httpVersionMajor !== 2 || req.method !== "POST") return false;
  if (headerOf(req, "content-type") !== contentTypeStreamProto) return false;
  const encoding = req.headers["connect-content-encoding"];
  return encoding === undefined || encoding === "identity";
}

/** Whether the client accepts gzip-compressed answers (`connect-accept-encoding`). */
function acceptsGzip(req: HttpRequest): boolean {
  const accepted = headerOf(req, "connect-accept-encoding");
  return accepted !== null && accepted.split(",").some((name) => name.trim() === "gzip");
}

/**
 * A plain-HTTP route serving `streams` (see the module comment); false for any other request,
 * which then goes to Connect.
 */
export function deviceStreamRoute(opts: DeviceStreamOptions, streams: readonly DeviceStream[]) {
  const byPath = new Map<string, DeviceStream>();
  for (const s of streams) {
    // Only calls a device session may make: the authentication here is that one rule's.
    if (ruleFor(s.method.parent.typeName, s.method.name) !== "device") {
      throw new Error(`${s.method.parent.typeName}/${s.method.name} is not a device call`);
    }
    byPath.set(`/${s.method.parent.typeName}/${s.method.name}`, s);
  }

  async function serve(s: DeviceStream, req: HttpRequest, res: http2.Http2ServerResponse): Promise<void> {
    const stream = res.stream;
    const gzipAnswers = acceptsGzip(req);
    // Connect's streaming protocol answers 200 and says how the stream ended in its last message.
    res.writeHead(200, { "content-type": contentTypeStreamProto, ...(gzipAnswers ? { "connect-content-encoding": "gzip" } : {}) });
    const ac = new AbortController();
    const onShutdown = () => ac.abort(new ConnectError("the coordinator is shutting down", Code.Unavailable));
    const onClose = () => ac.abort(new ConnectError("the client closed the stream", Code.Canceled));
    let timer: NodeJS.Timeout | undefined;
    if (opts.shutdown.aborted) onShutdown();
    else opts.shutdown.addEventListener("abort", onShutdown);
    stream.once("close", onClose);
    let error: ConnectError | undefined;
    try {
      const timeout = parseTimeout(headerOf(req, "connect-timeout-ms"), Number.MAX_SAFE_INTEGER);
      if (timeout.error) throw timeout.error;
      // Beyond what a timer holds (24.8 days) a deadline is as good as none.
      if (timeout.timeoutMs !== undefined && timeout.timeoutMs <= MAX_TIMER_MS) {
        timer = setTimeout(() => ac.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded)), timeout.timeoutMs);
      }
      const device = requireDevice(await resolvePrincipal(opts.store, headerOf(req, AUTHORIZATION_HEADER), "", headerOf(req, CSRF_HEADER)));
      const body = await readBody(stream, opts.maxMessageBytes + 5, ac.signal);
      let input;
      try {
        input = fromBinary(s.method.input, singleMessage(body, opts.maxMessageBytes));
      } catch (err) {
        throw ConnectError.from(err, Code.InvalidArgument);
      }
      ac.signal.throwIfAborted();
      for await (const message of s.serve(device, input, ac.signal)) {
        const output = s.method.output;
        let bytes: Uint8Array = toBinary(output, isMessage(message, output) ? message : create(output, message));
        if (bytes.byteLength > opts.maxMessageBytes) {
          throw new ConnectError(`message size ${bytes.byteLength} is larger than configured writeMaxBytes ${opts.maxMessageBytes}`, Code.ResourceExhausted);
        }
        let flags = 0;
        if (gzipAnswers && bytes.byteLength >= COMPRESS_MIN_BYTES) {
          bytes = await gzip(bytes);
          flags = 1;
        }
        // Checked after the compression, which waits: a write to a closed stream drains never.
        if (stream.destroyed || ac.signal.aborted) break;
        // A device that does not read its stream holds back only its own generator.
        if (!res.write(encodeEnvelope(flags, bytes))) await writable(stream, ac.signal);
      }
      // The stream ended because it was aborted: say why, as Connect would.
      if (ac.signal.aborted) error = ConnectError.from(ac.signal.reason);
    } catch (err) {
      error = ConnectError.from(fromStoreError(err));
    } finally {
      clearTimeout(timer);
      opts.shutdown.removeEventListener("abort", onShutdown);
      stream.off("close", onClose);
    }
    if (!stream.destroyed && !res.writableEnded) res.end(endStream(error));
  }

  return (req: HttpRequest, res: HttpResponse): boolean => {
    const s = byPath.get(pathOf(req));
    if (!s || !isLeanForm(req)) return false;
    const h2 = res as http2.Http2ServerResponse;
    serve(s, req, h2).catch(() => {
      // Writing the end of a stream that broke meanwhile: nothing left to tell anyone.
      if (!h2.stream.destroyed) h2.stream.destroy();
    });
    return true;
  };
}
