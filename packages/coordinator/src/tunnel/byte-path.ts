import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import http2 from "node:http2";
import {
  adminv1,
  drained,
  TUNNEL_ATTACH_PATH,
  TUNNEL_DEVICE_HEADER,
  TUNNEL_DEVICE_ID_HEADER,
  TUNNEL_DEVICE_NAME_HEADER,
  TUNNEL_ERROR_CODE_HEADER,
  TUNNEL_ERROR_MESSAGE_HEADER,
  TUNNEL_ID_HEADER,
  TUNNEL_OPEN_PATH,
  TUNNEL_PORT_HEADER,
  widenTunnelWindows,
} from "@flotilla/protocol";
import { resolvePrincipal } from "../access/interceptor.ts";
import { CSRF_HEADER } from "../access/cookies.ts";
import { rolePermissions } from "../access/policy.ts";
import type { ServiceContext } from "../context.ts";
import { headerOf, pathOf, type HttpRequest, type HttpResponse as AnyResponse } from "../server/http.ts";
import { EOF, type FrameQueue } from "./frame-queue.ts";
import type { TunnelRegistry } from "./registry.ts";
import { background, unlessAborted } from "./relay.ts";
import type { OpenTunnel } from "./tunnel-service.ts";

/**
 * What one queued frame of the byte path holds at most: a read from an HTTP/2 stream may join
 * several DATA frames; it is cut (without a copy) so a tunnel's queue holds its limit plus at
 * most this.
 */
const PIECE_BYTES = 64 * 1024;

/** The byte path is HTTP/2 only (the route refuses HTTP/1.1 first). */
type HttpResponse = http2.Http2ServerResponse;

/** HTTP statuses for the codes a refusal carries (the CLI reads the code header, not these). */
const STATUS: Partial<Record<Code, number>> = {
  [Code.InvalidArgument]: 400,
  [Code.Unauthenticated]: 401,
  [Code.PermissionDenied]: 403,
  [Code.NotFound]: 404,
  [Code.FailedPrecondition]: 412,
  [Code.DeadlineExceeded]: 504,
  [Code.Unavailable]: 503,
};

function errorHeaders(err: ConnectError): Record<string, string> {
  return {
    [TUNNEL_ERROR_CODE_HEADER]: String(err.code),
    [TUNNEL_ERROR_MESSAGE_HEADER]: encodeURIComponent(err.rawMessage.slice(0, 1000)),
  };
}

/** Refuses before the tunnel opens: a status, the code and message in headers and as text. */
function refuse(res: AnyResponse, err: ConnectError): void {
  if (res.headersSent) return fail(res as HttpResponse, err);
  res.writeHead(STATUS[err.code] ?? 500, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...errorHeaders(err) });
  res.end(`${err.rawMessage}\n`);
}

/**
 * Ends an open tunnel stream with an error: in trailers while the response is still open,
 * else (the other side's eof went out already) by resetting the stream.
 */
function fail(res: HttpResponse, err: ConnectError): void {
  if (res.stream.destroyed) return;
  if (!res.writableEnded) {
    res.addTrailers(errorHeaders(err));
    res.end();
  } else {
    res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  }
}

/**
 * Whether a closed stream was cut off (reset, or its connection lost) rather than ended by both
 * sides: a stream closes as soon as both bodies have ended, with request bytes possibly still
 * waiting here to be relayed.
 */
function wasReset(res: HttpResponse): boolean {
  return res.stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR;
}

/** Whether a request body stopped because its stream was reset (no eof, though the loop ended). */
function wasCut(res: HttpResponse): boolean {
  return res.stream.aborted || (res.stream.closed && wasReset(res));
}

/**
 * Reads a request body into `queue` (chunks as they come, then eof), only as fast as it drains.
 * From the HTTP/2 stream itself: the compatibility request object emits 'close' as soon as both
 * bodies have ended, with bytes still buffered, which its async iterator takes for a failure.
 * A reset stream fails the loop (a premature close), so only a real end becomes eof.
 */
async function pumpBody(res: HttpResponse, queue: FrameQueue, count: (n: number) => void): Promise<void> {
  for await (const chunk of res.stream as AsyncIterable<Buffer>) {
    for (let i = 0; i < chunk.length; i += PIECE_BYTES) {
      const piece = chunk.subarray(i, i + PIECE_BYTES);
      count(piece.length);
      await queue.push({ kind: "data", data: piece });
    }
  }
  if (wasCut(res)) throw new ConnectError("the device's agent disconnected", Code.Aborted);
  await queue.push(EOF);
}

/** Writes `queue`'s frames into a response body until eof, which ends it. */
async function drainInto(queue: FrameQueue, res: HttpResponse): Promise<void> {
  for (;;) {
    const frame = await queue.pull();
    if (frame.kind === "eof") {
      res.end();
      queue.release(frame);
      return;
    }
    if (!res.write(frame.data)) await drained(res);
    queue.release(frame);
    if (res.stream.destroyed) throw new ConnectError("the stream closed", Code.Aborted);
  }
}

/** The admin's messages as the tunnel core reads them: the target, the body's chunks, eof. */
async function* openRequests(res: HttpResponse, device: string, port: number): AsyncGenerator<adminv1.OpenRequest> {
  yield create(adminv1.OpenRequestSchema, { frame: { case: "target", value: { device, port } } });
  for await (const chunk of res.stream as AsyncIterable<Buffer>) {
    for (let i = 0; i < chunk.length; i += PIECE_BYTES) {
      yield create(adminv1.OpenRequestSchema, { frame: { case: "data", value: chunk.subarray(i, i + PIECE_BYTES) } });
    }
  }
  if (wasCut(res)) throw new ConnectError("the admin closed the tunnel", Code.Canceled);
  yield create(adminv1.OpenRequestSchema, { frame: { case: "eof", value: {} } });
}

/**
 * The tunnels' byte path beside Connect: plain HTTP/2 streams whose bodies are the tunnel's
 * bytes, without a message envelope per chunk. The same credentials and checks as the RPCs: an
 * admin with `tunnel:open` opens (refusals audited as action `Open`), an agent attaches only to
 * its own device's tunnels. Both relay through the tunnel's bounded queues, as the RPCs do, so
 * either side may use either path.
 */
export function tunnelByteRoutes(ctx: ServiceContext, tunnels: TunnelRegistry, openTunnel: OpenTunnel) {
  const { store, auditor, log } = ctx;

  async function principalOf(req: HttpRequest) {
    const cookies = typeof req.headers.cookie === "string" ? req.headers.cookie : "";
    return resolvePrincipal(store, headerOf(req, "authorization"), cookies, headerOf(req, CSRF_HEADER));
  }

  async function open(req: HttpRequest, res: HttpResponse): Promise<void> {
    const p = await principalOf(req);
    if (!p) throw new ConnectError("not logged in, or the session expired", Code.Unauthenticated);
    if (p.kind !== "admin") throw new ConnectError("only admins may call this", Code.PermissionDenied);
    const source = req.socket?.remoteAddress ?? "";
    if (!rolePermissions[p.role].has("tunnel:open")) {
      await auditor.record({ orgId: p.orgId, actor: p.actor, action: "Open", target: "", source, outcome: "denied", detail: "" });
      throw new ConnectError(`role ${p.role} may not Open`, Code.PermissionDenied);
    }
    const device = headerOf(req, TUNNEL_DEVICE_HEADER) ?? "";
    const port = Number(headerOf(req, TUNNEL_PORT_HEADER));
    const ac = new AbortController();
    res.once("close", () => {
      if (wasReset(res)) ac.abort(new ConnectError("the admin closed the tunnel", Code.Canceled));
    });
    for await (const m of openTunnel({ principal: p, source, signal: ac.signal }, openRequests(res, device, port))) {
      switch (m.frame.case) {
        case "opened":
          res.writeHead(200, {
            "content-type": "application/octet-stream",
            "cache-control": "no-store",
            [TUNNEL_ID_HEADER]: m.frame.value.tunnelId,
            [TUNNEL_DEVICE_ID_HEADER]: m.frame.value.deviceId,
            [TUNNEL_DEVICE_NAME_HEADER]: encodeURIComponent(m.frame.value.deviceName),
          });
          break;
        case "data":
          if (!res.write(m.frame.value)) await drained(res);
          break;
        case "eof":
          res.end();
          break;
      }
    }
  }

  async function attach(req: HttpRequest, res: HttpResponse): Promise<void> {
    const p = await principalOf(req);
    if (!p) throw new ConnectError("not logged in, or the session expired", Code.Unauthenticated);
    if (p.kind !== "device") throw new ConnectError("only agents may call this", Code.PermissionDenied);
    const tunnelId = headerOf(req, TUNNEL_ID_HEADER) ?? "";
    const tunnel = tunnels.claim(p.deviceId, tunnelId);
    if (!tunnel) throw new ConnectError(`no tunnel ${JSON.stringify(tunnelId.slice(0, 64))} waits for this device`, Code.NotFound);
    tunnel.answer({ ok: true });
    let finished = false;
    res.once("close", () => {
      if (!finished && wasReset(res)) tunnel.abort(new ConnectError("the device's agent disconnected", Code.Aborted));
    });
    try {
      res.writeHead(200, { "content-type": "application/octet-stream", "cache-control": "no-store" });
      const downstream = background(
        pumpBody(res, tunnel.down, (n) => (tunnel.bytesDown += n)),
        (err) => tunnel.abort(err),
      );
      await drainInto(tunnel.up, res);
      await unlessAborted(downstream, tunnel.signal);
      finished = true;
    } catch (err) {
      tunnel.abort(err);
      throw err;
    } finally {
      tunnels.release(tunnel);
    }
  }

  return (req: HttpRequest, res: AnyResponse): boolean => {
    const path = pathOf(req);
    const serve = path === TUNNEL_OPEN_PATH ? open : path === TUNNEL_ATTACH_PATH ? attach : undefined;
    if (!serve) return false;
    if (req.method !== "POST" || req.httpVersionMajor !== 2) {
      refuse(res, new ConnectError("tunnel streams are HTTP/2 POST requests", Code.InvalidArgument));
      return true;
    }
    const h2 = res as HttpResponse;
    widenTunnelWindows(h2.stream.session);
    serve(req, h2).catch((err: unknown) => {
      const ce = ConnectError.from(err);
      if (ce.code !== Code.Canceled && ce.code !== Code.Aborted) log.info("tunnel stream failed", { path, err: ce.rawMessage });
      if (!h2.stream.destroyed) refuse(h2, ce);
    });
    return true;
  };
}
