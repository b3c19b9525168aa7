import { ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { ClientHttp2Stream, Http2Session } from "node:http2";
import { CoordinatorKeyMismatchError } from "./auth/handshake.ts";
import { keyPin } from "./identity/index.ts";
import { widenTunnelWindows } from "./tunnel-stream.ts";
import { backoffDelay } from "./wakeup.ts";
import { certificatePublicKey, fetchCertificate, fetchPinnedCertificate, pinnedTlsOptions } from "./tls/index.ts";

export interface CoordinatorTransportOptions {
  /** The coordinator's URL, http:// (loopback) or https://. */
  url: string;
  /**
   * keyPin() of the coordinator's key. Over https, a certificate made from that key is trusted
   * exactly (no CA needed); any other certificate must pass the system's CA checks for the host.
   */
  pin?: string;
  interceptors?: Interceptor[];
  /** Largest message accepted or sent, in bytes. */
  maxMessageBytes?: number;
  /** The local address to connect from (the fleet simulator gives each device its own). */
  localAddress?: string;
  /**
   * Over https, trust a certificate made from another ed25519 key than the pinned one for this
   * transport, and report that key's pin as `presentedPin`, instead of refusing. Only for a
   * caller that runs Hello first and checks the key rotation there (verifyCoordinatorProof with
   * `tlsKeyPin: presentedPin`) before it sends anything secret.
   */
  allowRotation?: boolean;
  /** How long an HTTP/2 ping may go unanswered before the connection is given up (default 10 s). */
  pingTimeoutMs?: number;
  /** How often a connection with calls out is pinged (default {@link PING_INTERVAL_MS}). */
  pingIntervalMs?: number;
  /**
   * HTTP/2 flow-control windows this client opens for what the coordinator sends: each stream's
   * (SETTINGS_INITIAL_WINDOW_SIZE) and, twice that, the connection's. HTTP/2's default is 64 KiB
   * for both, so an answer larger than that (a page of a thousand devices is about 150 KiB) stops
   * at 64 KiB until this client's WINDOW_UPDATE reaches the coordinator, a round trip through
   * its event loop for every 64 KiB: under load, seconds each. Unset: the defaults.
   */
  receiveWindowBytes?: number;
}

/**
 * The receive window of admin clients (the CLI): larger than any answer they accept (4 MiB), so
 * a coordinator writes a whole answer at once. A window is only a permission; nothing is
 * allocated ahead.
 */
export const ADMIN_RECEIVE_WINDOW_BYTES = 8 * 1024 * 1024;

/** How often an agent's (or admin's) connection with calls out pings the coordinator. */
export const PING_INTERVAL_MS = 10_000;

/** A transport and the means to close its HTTP/2 connection (which otherwise keeps a process alive). */
export interface ClosableTransport {
  transport: Transport;
  close(): void;
  /** With `allowRotation`: the pin of the unpinned ed25519 key the certificate carried. */
  presentedPin?: string;
  /**
   * True while the HTTP/2 session ended in an error (the server went away, a ping timed out) and
   * no call opened another since; the next call would try to connect again.
   */
  sessionFailed?(): boolean;
}

/**
 * A ConnectRPC transport to a coordinator over HTTP/2 (h2c on plain http). The transport
 * pins TLS to the coordinator's own key when it serves a certificate made from it.
 */
export async function coordinatorTransport(opts: CoordinatorTransportOptions): Promise<ClosableTransport> {
  const url = new URL(opts.url);
  let nodeOptions: { ca?: string[]; checkServerIdentity?: () => undefined; localAddress?: string; settings?: { initialWindowSize: number } } = {};
  let presentedPin: string | undefined;
  if (url.protocol === "https:" && opts.pin) {
    try {
      nodeOptions = pinnedTlsOptions(await fetchPinnedCertificate(opts.url, opts.pin));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // A certificate made from some other ed25519 key is an impostor, unless the caller checks
      // a rotation in Hello; a CA-issued certificate (RSA, ECDSA) gets ordinary CA validation,
      // and Hello still checks the pin.
      if (/does not match the pinned key/.test(message)) {
        if (!opts.allowRotation) throw new CoordinatorKeyMismatchError(message);
        const cert = await fetchCertificate(opts.url);
        presentedPin = keyPin(certificatePublicKey(cert));
        nodeOptions = pinnedTlsOptions(cert);
      } else if (!/not an ed25519 key/.test(message)) {
        throw err;
      }
    }
  }
  if (opts.localAddress) nodeOptions = { ...nodeOptions, localAddress: opts.localAddress };
  if (opts.receiveWindowBytes) nodeOptions = { ...nodeOptions, settings: { initialWindowSize: opts.receiveWindowBytes } };
  // Pings find a dead connection (a coordinator killed, a NAT that forgot us) within seconds.
  const sessionManager = new GuardedSessionManager(opts.url, { pingIntervalMs: opts.pingIntervalMs ?? PING_INTERVAL_MS, pingTimeoutMs: opts.pingTimeoutMs ?? 10_000 }, nodeOptions);
  if (opts.receiveWindowBytes) sessionManager.connectionWindowBytes = 2 * opts.receiveWindowBytes;
  const transport = createConnectTransport({
    baseUrl: opts.url,
    httpVersion: "2",
    sessionManager,
    interceptors: opts.interceptors ?? [],
    readMaxBytes: opts.maxMessageBytes ?? 4 * 1024 * 1024,
    writeMaxBytes: opts.maxMessageBytes ?? 4 * 1024 * 1024,
  });
  rawStreams.set(transport, async (path, headers) => {
    const stream = await sessionManager.request("POST", path, headers, {});
    widenTunnelWindows(stream.session);
    // Never an unhandled 'error' event (a connection lost while nobody reads the stream): the
    // stream's users see failures through their own listeners and its rstCode.
    stream.on("error", () => {});
    stream.on("data", () => sessionManager.notifyResponseByteRead(stream));
    return stream;
  });
  return { transport, close: () => sessionManager.abort(), presentedPin, sessionFailed: () => sessionManager.state() === "error" };
}

/** Opens a plain HTTP/2 POST stream to `path` with `headers` (no others are added). */
export type RawStreamOpener = (path: string, headers: Record<string, string>) => Promise<ClientHttp2Stream>;

const rawStreams = new WeakMap<Transport, RawStreamOpener>();

/**
 * For a transport made by {@link coordinatorTransport}: opens plain HTTP/2 streams on the same
 * connection as its calls (same TLS pin), for a coordinator route beside Connect (tunnel bytes).
 * Its interceptors do not apply: the caller adds `authorization` itself. Undefined for any other
 * transport.
 */
export function rawStreamOf(transport: Transport): RawStreamOpener | undefined {
  return rawStreams.get(transport);
}

/** An interceptor that adds `authorization: Bearer <token>` from a getter, on every call. */
export function bearerInterceptor(token: () => string | undefined): Interceptor {
  return (next) => (req) => {
    const t = token();
    if (t) req.header.set("authorization", `Bearer ${t}`);
    return next(req);
  };
}

const guarded = new WeakSet<Http2Session>();

/**
 * An Http2SessionManager whose HTTP/2 sessions can never crash the process. connect-node removes
 * its own 'error' listener from a session when it leaves that session behind (an abort, a new
 * connection after a failed keep-alive), but a session it destroyed with "PING timed out" emits
 * that error a tick later, with no listener left: Node then throws it as an unhandled 'error'
 * event and the process exits (connect-es issues 1143 and 1795). Every session therefore gets one
 * listener of our own for its whole life. It only keeps the process alive: the same error still
 * fails the session's streams, and callers see it there as `unavailable`.
 */
export class GuardedSessionManager extends Http2SessionManager {
  /**
   * The connection-level receive window to open on each new session (HTTP/2 has no setting for
   * it: a WINDOW_UPDATE right after the session's first request, which it follows on the wire,
   * ahead of any answer). Unset: HTTP/2's 64 KiB.
   */
  connectionWindowBytes?: number;

  override async request(...args: Parameters<Http2SessionManager["request"]>): Promise<ClientHttp2Stream> {
    const stream = await super.request(...args);
    const session = stream.session;
    if (session && !guarded.has(session)) {
      guarded.add(session);
      session.on("error", () => {});
      if (this.connectionWindowBytes && !session.destroyed) {
        try {
          session.setLocalWindowSize(this.connectionWindowBytes);
        } catch {
          // a session closing meanwhile: its streams fail on their own
        }
      }
    }
    return stream;
  }
}

/**
 * Error metadata by which a coordinator that is overloaded or whose database is down tells a
 * client how long to wait before it tries again, in milliseconds. Clients wait at least that
 * long (with jitter on top), so a busy coordinator is not met by a storm of retries.
 */
export const retryAfterHeader = "flotilla-retry-after-ms";

/** The wait (ms) a coordinator advised with `err`, or undefined when it advised none. */
export function retryAfterMs(err: unknown): number | undefined {
  if (!(err instanceof ConnectError)) return undefined;
  const v = Number(err.metadata.get(retryAfterHeader));
  return Number.isFinite(v) && v > 0 ? Math.min(v, 10 * 60_000) : undefined;
}

/**
 * The wait before trying again after `err`: jittered exponential backoff (see backoffDelay), and
 * never less than what the coordinator advised, plus up to half of that again so that clients
 * told the same do not come back together.
 */
export function retryDelay(err: unknown, attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const backoff = backoffDelay(attempt, baseMs, maxMs, random);
  const advised = retryAfterMs(err);
  return advised === undefined ? backoff : Math.max(backoff, Math.round(advised * (1 + random() / 2)));
}
