import { Code, ConnectError } from "@connectrpc/connect";
import http2, { type ClientHttp2Stream, type IncomingHttpHeaders, type IncomingHttpStatusHeader } from "node:http2";
import type { Readable, Writable } from "node:stream";
import { TUNNEL_ERROR_CODE_HEADER, TUNNEL_ERROR_MESSAGE_HEADER } from "./tunnel.ts";

export type TunnelStreamHeaders = IncomingHttpHeaders & IncomingHttpStatusHeader;

/** The ConnectError a tunnel answer's headers or trailers name, if any. */
export function tunnelStreamError(headers: IncomingHttpHeaders): ConnectError | undefined {
  const code = Number(headers[TUNNEL_ERROR_CODE_HEADER]);
  if (!Number.isInteger(code) || code <= 0 || code > Code.Unauthenticated) return undefined;
  const raw = headers[TUNNEL_ERROR_MESSAGE_HEADER];
  let message = typeof raw === "string" ? raw : "";
  try {
    message = decodeURIComponent(message);
  } catch {
    // not encoded: as it is
  }
  return new ConnectError(message || Code[code] || "tunnel error", code as Code);
}

/** What drained() waits on: a socket, a stream, an HTTP response. */
export interface DrainEmitter {
  on(event: "drain" | "close" | "error", fn: () => void): unknown;
  off(event: "drain" | "close" | "error", fn: () => void): unknown;
}

/** Waits until `w` can take more after a write returned false, or is gone (closed or failed). */
export function drained(w: DrainEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off("drain", done);
      w.off("close", done);
      w.off("error", done);
      resolve();
    };
    w.on("drain", done);
    w.on("close", done);
    w.on("error", done);
  });
}

/** Resolves with the answer's headers; rejects when the stream fails first. */
export function tunnelStreamResponse(stream: ClientHttp2Stream): Promise<TunnelStreamHeaders> {
  return new Promise((resolve, reject) => {
    const onResponse = (headers: TunnelStreamHeaders) => {
      cleanup();
      resolve(headers);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(ConnectError.from(err, Code.Unavailable));
    };
    const onClose = () => {
      cleanup();
      reject(new ConnectError(`the tunnel stream closed before an answer (HTTP/2 code ${stream.rstCode})`, Code.Unavailable));
    };
    const cleanup = () => {
      stream.off("response", onResponse);
      stream.off("error", onError);
      stream.off("close", onClose);
    };
    stream.once("response", onResponse);
    stream.once("error", onError);
    stream.once("close", onClose);
  });
}

/**
 * Carries an open tunnel stream's bytes: `input` into the request body (its end is our eof) and
 * the response body into `output` (the other side's eof ends it). Node's pipes give the flow
 * control: `input` is read only as fast as HTTP/2 takes it, and the stream is read only as fast
 * as `output` drains. Resolves once both directions have ended; rejects with the coordinator's
 * error (trailers) or Aborted when the stream was reset.
 *
 * `output` is ended only by the other side's clean eof, never by a failure: a failed tunnel leaves
 * both ends to the caller, which reports the error before it closes them. (ssh, reading a
 * ProxyCommand's stdout, ends at its EOF and kills the command: an `output` ended by the failure
 * would lose the error line.)
 */
export function relayTunnelStream(stream: ClientHttp2Stream, input: Readable, output: Writable, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    let failure: ConnectError | undefined;
    const fail = (err: ConnectError) => (failure ??= err);
    const onAbort = () => {
      fail(new ConnectError("the tunnel was closed", Code.Canceled));
      stream.close(http2.constants.NGHTTP2_CANCEL);
    };
    if (signal?.aborted) onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    stream.on("trailers", (trailers: IncomingHttpHeaders) => {
      const err = tunnelStreamError(trailers);
      if (!err) return;
      // The tunnel failed: nothing more goes either way, even while `input` still has bytes.
      fail(err);
      stream.close(http2.constants.NGHTTP2_CANCEL);
    });
    stream.on("error", (err: Error) => fail(ConnectError.from(err, Code.Aborted)));
    input.on("error", () => stream.close(http2.constants.NGHTTP2_CANCEL));
    output.on("error", () => stream.close(http2.constants.NGHTTP2_CANCEL));
    input.pipe(stream);
    // Trailers come before the body's end, so a failure is known by then.
    stream.pipe(output, { end: false });
    stream.once("end", () => {
      if (!failure) output.end();
    });
    stream.once("close", () => {
      signal?.removeEventListener("abort", onAbort);
      input.unpipe(stream);
      stream.unpipe(output);
      if (!failure && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
        fail(new ConnectError(`the tunnel ended abnormally (HTTP/2 code ${stream.rstCode})`, Code.Aborted));
      }
      if (failure) reject(failure);
      else resolve();
    });
  });
}

/**
 * HTTP/2 receive windows for a session that carries tunnel streams. Node's defaults (64 KiB per
 * stream and per connection) let a sender have only 64 KiB in flight before it waits for a
 * WINDOW_UPDATE, a round trip through busy event loops: that capped tunnels far below what the
 * processes can move. A window is only a permission, nothing is allocated ahead; it bounds what
 * a paused tunnel stream may buffer at the receiver.
 */
export const TUNNEL_STREAM_WINDOW_BYTES = 2 * 1024 * 1024;
export const TUNNEL_SESSION_WINDOW_BYTES = 16 * 1024 * 1024;
/** Largest DATA frame a tunnel session accepts (the default, 16 KiB, means many small chunks). */
export const TUNNEL_FRAME_BYTES = 256 * 1024;

const widened = new WeakSet<http2.Http2Session>();

/** Raises `session`'s receive windows for tunnel streams, once per session (either end). */
export function widenTunnelWindows(session: http2.Http2Session | undefined): void {
  if (!session || widened.has(session) || session.destroyed) return;
  widened.add(session);
  try {
    session.setLocalWindowSize(TUNNEL_SESSION_WINDOW_BYTES);
    session.settings({ initialWindowSize: TUNNEL_STREAM_WINDOW_BYTES, maxFrameSize: TUNNEL_FRAME_BYTES });
  } catch {
    // a session closing meanwhile: its streams fail on their own
  }
}
