import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { TLSSocket } from "node:tls";
import type { HttpRequest, HttpResponse } from "./http.ts";

/** A Node request handler that serves HTTP/1.1 and HTTP/2 alike (connectNodeAdapter's shape). */
export type RequestHandler = (req: HttpRequest, res: HttpResponse) => void;

/** Where and how {@link listen} serves. */
export interface ListenOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  handler: RequestHandler;
  /** PEM certificate and key; without them the port speaks cleartext (keep that to loopback). */
  tls?: { certPem: string; keyPem: string };
  /** In a node:cluster worker: a port of this process alone, not one shared through the primary. */
  exclusive?: boolean;
}

/** A listening server. */
export interface Listener {
  /** How to reach it: `http://127.0.0.1:PORT` or `https://HOST:PORT`. */
  readonly url: string;
  readonly port: number;
  /**
   * Stops accepting, lets requests in flight finish for a short grace, then destroys whatever
   * is still open (long-lived server streams included). Resolves once every socket is closed.
   */
  close(): Promise<void>;
}

/** The HTTP/2 client connection preface (RFC 9113 section 3.4). */
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
/** How long close() waits for open requests and streams before cutting them off. */
const CLOSE_GRACE_MS = 1000;
/**
 * Connections the kernel completes and queues while the coordinator has not accepted them yet.
 * Deep enough for a burst of reconnects, shallow enough that a connection does not wait in it
 * longer than its agent waits for the call it carries: a coordinator behind on its work accepts
 * a few hundred connections a second, and a queue of thousands then hands it connections whose
 * agents gave up seconds ago, each costing a handshake for nothing. A SYN the kernel drops at a
 * full queue costs the coordinator nothing; the agent's kernel sends it again after 1, 3 and 7 s.
 * Measured by restarting a coordinator under 10,000 simulated devices (README, "Restarting under 10,000 devices"):
 * all were online again after 112 to 165 s (median 153) with 1,024, 161 to 275 s (median 171)
 * with 4,096 (the kernel's cap, net.core.somaxconn, here), 1,024 ahead in each of four
 * alternating pairs; Node's default of 511, once, 164 s.
 */
export const LISTEN_BACKLOG = 1024;
/** How long a cleartext connection may stay silent before it is dropped undecided. */
const DETECT_TIMEOUT_MS = 30_000;

/**
 * Serves `handler` on one port over HTTP/2 and HTTP/1.1 (docs/architecture.md, decision 1). With `tls`, ALPN
 * picks h2 or http/1.1; without it, each connection is sniffed for the HTTP/2 preface, so h2c
 * with prior knowledge (Connect's Node transport) and plain HTTP/1.1 (curl) share the port.
 * Cleartext has no request or header timeouts: keep it on loopback (see {@link isLoopback}).
 */
export async function listen(opts: ListenOptions): Promise<Listener> {
  const connections = new Connections();
  const server = opts.tls ? secureServer(opts.tls, opts.handler, connections) : cleartextServer(opts.handler, connections);

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: opts.port, host: opts.host, exclusive: opts.exclusive ?? false, backlog: LISTEN_BACKLOG }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as net.AddressInfo;
  const url = `${opts.tls ? "https" : "http"}://${urlHost(opts.host)}:${port}`;

  let closed: Promise<void> | undefined;
  return {
    url,
    port,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => connections.destroyAll(), CLOSE_GRACE_MS);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        connections.shutdown();
      })),
  };
}

/** True for names and addresses that never leave the machine: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(host: string): boolean {
  const bare = unbracket(host).toLowerCase();
  if (bare === "localhost" || bare.endsWith(".localhost")) return true;
  const family = net.isIP(bare);
  if (family === 4) return LOOPBACK.check(bare, "ipv4");
  if (family === 6) return LOOPBACK.check(bare, "ipv6");
  return false;
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");
LOOPBACK.addSubnet("::ffff:127.0.0.0", 104, "ipv6");

function secureServer(tls: { certPem: string; keyPem: string }, handler: RequestHandler, connections: Connections) {
  const server = http2.createSecureServer({ allowHTTP1: true, cert: tls.certPem, key: tls.keyPem }, handler);
  server.on("connection", (socket: net.Socket) => connections.accept(socket));
  server.on("secureConnection", (socket: TLSSocket) => {
    if (socket.alpnProtocol !== "h2") connections.http1(socket);
  });
  server.on("session", (session) => connections.session(session));
  server.on("request", (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    // With allowHTTP1, HTTP/1.1 requests arrive here too, as http.IncomingMessage.
    if (req.httpVersionMajor === 1) connections.request(req.socket, res);
  });
  return server;
}

function cleartextServer(handler: RequestHandler, connections: Connections): net.Server {
  const h1 = http.createServer(handler);
  h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => connections.request(req.socket, res));
  const h2 = http2.createServer(handler);
  h2.on("session", (session) => connections.session(session));

  return net.createServer((socket) => {
    if (!connections.accept(socket)) return;
    connections.sniffing.add(socket);
    let seen: Buffer = Buffer.alloc(0);
    const done = (target: net.Server | undefined): void => {
      connections.sniffing.delete(socket);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("timeout", onEnd);
      socket.off("error", onEnd);
      socket.setTimeout(0);
      if (target === undefined) {
        socket.destroy();
        return;
      }
      socket.pause();
      socket.unshift(seen);
      if (target === h1) connections.http1(socket);
      target.emit("connection", socket);
      // HTTP/2 reads the unshifted bytes itself (socket.read() on setup). The HTTP/1.1 parser
      // takes over the socket's handle for new bytes and gets buffered ones through 'data'
      // only, so the stream must flow again; resume() emits them before any newer read.
      if (target === h1) socket.resume();
    };
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      if (!seen.subarray(0, n).equals(PREFACE.subarray(0, n))) done(h1);
      else if (seen.length >= PREFACE.length) done(h2);
      // else: a prefix of the preface so far; wait for more.
    };
    // Closed, silent or broken before the protocol is known: nothing to hand over.
    const onEnd = (): void => done(undefined);
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("timeout", onEnd);
    socket.on("error", onEnd);
    socket.setTimeout(DETECT_TIMEOUT_MS);
  });
}

/** Every open connection, so close() can wind them down and never wait on a keep-alive. */
class Connections {
  private readonly sockets = new Set<net.Socket>();
  /** Cleartext connections whose protocol is not known yet. */
  readonly sniffing = new Set<net.Socket>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** HTTP/1.1 connections and how many responses each has in flight. */
  private readonly busy = new Map<net.Socket, number>();
  private closing = false;

  /** Tracks a new connection; false (and the socket destroyed) once closing. */
  accept(socket: net.Socket): boolean {
    if (this.closing) {
      socket.destroy();
      return false;
    }
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
    return true;
  }

  session(session: http2.ServerHttp2Session): void {
    this.sessions.add(session);
    session.once("close", () => this.sessions.delete(session));
    if (this.closing) session.close();
  }

  http1(socket: net.Socket): void {
    this.busy.set(socket, 0);
    socket.once("close", () => this.busy.delete(socket));
    if (this.closing) socket.destroy();
  }

  request(socket: net.Socket, res: http.ServerResponse | http2.Http2ServerResponse): void {
    this.busy.set(socket, (this.busy.get(socket) ?? 0) + 1);
    res.once("close", () => {
      const count = this.busy.get(socket);
      if (count === undefined) return; // the connection itself is gone
      this.busy.set(socket, count - 1);
      if (this.closing && count === 1) socket.end();
    });
  }

  /** Refuses new work: GOAWAY on every HTTP/2 session, idle HTTP/1.1 connections closed. */
  shutdown(): void {
    this.closing = true;
    for (const session of this.sessions) session.close();
    for (const [socket, inFlight] of this.busy) {
      if (inFlight === 0) socket.destroy();
    }
    for (const socket of this.sniffing) socket.destroy();
  }

  /** Cuts off whatever outlived the grace period. */
  destroyAll(): void {
    for (const session of this.sessions) session.destroy();
    for (const socket of this.busy.keys()) socket.destroy();
    for (const socket of this.sockets) socket.destroy();
  }
}

function urlHost(host: string): string {
  if (host === "" || host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "[::1]";
  return net.isIPv6(host) ? `[${host}]` : host;
}

function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}
