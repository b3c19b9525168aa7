import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  ADMIN_RECEIVE_WINDOW_BYTES,
  adminv1,
  bearerInterceptor,
  certificatePublicKey,
  CoordinatorKeyMismatchError,
  coordinatorTransport,
  fetchCertificate,
  keyPin,
  loginMessage,
  newNonce,
  uncompressedTunnels,
  verifyCoordinatorProof,
  type ClosableTransport,
} from "@flotilla/protocol";
import type { CliConfig } from "../config.ts";
import { UsageError } from "../errors.ts";
import { Credentials, type CoordinatorEntry } from "./credentials.ts";
import { retryBrokenCalls } from "./retry.ts";

export type AdminClient = Client<typeof adminv1.AdminService>;

/**
 * Whom admin commands talk to, and as whom: the CLI's options (see cliOptionSpecs for each),
 * FLOTILLA_HOME always resolved.
 */
export type AdminTarget = Pick<CliConfig, "home"> & Partial<Pick<CliConfig, "coordinator" | "keyFile" | "org" | "apiToken" | "sshAuthSock">>;

/** Normalizes a coordinator URL: scheme required, no trailing slash. */
export function normalizeUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`invalid coordinator URL ${JSON.stringify(url)}: expected http(s)://host:port`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new UsageError(`invalid coordinator URL ${JSON.stringify(url)}: expected http(s)://host:port`);
  }
  return `${u.protocol}//${u.host}`;
}

/**
 * Logs in with the admin key: Hello (checking the coordinator's key against the pin recorded at
 * the first login), then Login with a signed challenge. Records the session.
 */
export async function login(
  creds: Credentials,
  url: string,
  opts: { setupCode?: string; keyName?: string; organization?: string } = {},
): Promise<CoordinatorEntry> {
  const ctx = await creds.context();
  const known = ctx.coordinators[url];
  const signer = await creds.loginSigner();
  let opened: ClosableTransport;
  try {
    opened = await coordinatorTransport({ url, pin: known?.pin ?? (await firstUsePin(url)), allowRotation: true, receiveWindowBytes: ADMIN_RECEIVE_WINDOW_BYTES });
  } catch (err) {
    signer.close();
    throw err;
  }
  const { transport, close, presentedPin } = opened;
  const client = createClient(adminv1.AdminService, transport);
  let pin: string;
  let res: adminv1.LoginResponse;
  try {
    const nonce = newNonce();
    const hello = await client.hello({ clientNonce: nonce });
    const proof = hello.proof;
    // The first login pins the coordinator's key (trust on first use, as ssh does); later ones check it.
    pin = known?.pin ?? (proof ? keyPin(proof.coordinatorKey) : "");
    // A rotated coordinator key is accepted when a chain of endorsements leads to it from the pin.
    const challenge = verifyCoordinatorProof(proof, nonce, pin, { tlsKeyPin: presentedPin, onRotated: (p) => (pin = p) });
    res = await client.login({
      publicKey: signer.publicKey,
      challenge,
      signature: await signer.sign(loginMessage(challenge)),
      setupCode: opts.setupCode ?? "",
      keyName: opts.keyName ?? "",
      organization: opts.organization ?? "",
    });
  } finally {
    close();
    signer.close();
  }
  const session = { token: res.sessionToken, expiresAt: Number(res.expiresAt?.seconds ?? 0n) * 1000 };
  const entry: CoordinatorEntry = opts.organization
    ? { ...known, pin, orgSessions: { ...known?.orgSessions, [opts.organization]: { ...session, role: res.role } } }
    : { ...known, pin, session, organization: res.organization ? { id: res.organization.id, name: res.organization.name } : undefined, role: res.role };
  ctx.coordinators[url] = entry;
  ctx.current = url;
  await creds.saveContext(ctx);
  return entry;
}

/**
 * At the first login over https, the pin of the coordinator's own certificate, if it serves one
 * made from its key; Hello then proves the coordinator holds that key.
 */
async function firstUsePin(url: string): Promise<string | undefined> {
  if (!url.startsWith("https:")) return undefined;
  try {
    return keyPin(certificatePublicKey(await fetchCertificate(url)));
  } catch {
    return undefined; // a CA-issued certificate: ordinary CA validation applies
  }
}

/** The coordinator URL a command talks to. */
export async function targetUrl(target: AdminTarget): Promise<string> {
  if (target.coordinator) return normalizeUrl(target.coordinator);
  const current = (await new Credentials(target.home).context()).current;
  if (!current) {
    throw new UsageError("not logged in: run `flotilla login --coordinator URL --setup-code CODE` first");
  }
  return current;
}

/**
 * A client for admin calls. Uses the recorded session and logs in again, once, when the session
 * has expired or the coordinator no longer knows it.
 */
export async function adminClient(target: AdminTarget): Promise<AdminClient> {
  return serviceClient(target, adminv1.AdminService);
}

/** A client for any admin-side service, authenticated as {@link adminClient} is. */
export async function serviceClient<S extends DescService>(target: AdminTarget, service: S): Promise<Client<S>> {
  return createClient(service, await adminTransport(target));
}

/**
 * An authenticated transport for any admin service, with the same credentials as
 * {@link adminClient}: FLOTILLA_TOKEN, or the recorded session (renewed when it expires).
 * Streams are not retried after a late Unauthenticated; the session is renewed before.
 */
export async function adminTransport(target: AdminTarget): Promise<Transport> {
  return (await authenticatedTransport(target)).transport;
}

/**
 * {@link adminTransport} and the bearer token its calls carry right now, for plain HTTP/2
 * streams on the same connection (the tunnels' byte path).
 */
export async function authenticatedTransport(target: AdminTarget): Promise<{ transport: Transport; token(): string | undefined }> {
  const s = await adminSession(target);
  mark("session ready");
  if (target.apiToken) {
    // CI: the token is the credential; no key, no login.
    const { transport, close } = await coordinatorTransport({ url: s.url, pin: s.pin, interceptors: [retrying, bearerInterceptor(() => target.apiToken), uncompressedTunnels, timed], pingTimeoutMs: ADMIN_PING_TIMEOUT_MS, receiveWindowBytes: ADMIN_RECEIVE_WINDOW_BYTES });
    openConnections.add(close);
    mark("transport ready");
    return { transport, token: () => target.apiToken };
  }
  let token = s.token;
  const relogin = (): Interceptor => (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (req.stream || ConnectError.from(err).code !== Code.Unauthenticated) throw err;
      token = (await s.relogin()).token;
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    }
  };
  let opened: ClosableTransport;
  try {
    opened = await coordinatorTransport({ url: s.url, pin: s.pin, interceptors: [retrying, relogin(), bearerInterceptor(() => token), uncompressedTunnels, timed], pingTimeoutMs: ADMIN_PING_TIMEOUT_MS, receiveWindowBytes: ADMIN_RECEIVE_WINDOW_BYTES });
  } catch (err) {
    if (!(err instanceof CoordinatorKeyMismatchError)) throw err;
    // The certificate's key changed: log in again, which accepts only an endorsed rotation.
    const again = await s.relogin();
    token = again.token;
    opened = await coordinatorTransport({ url: s.url, pin: again.pin, interceptors: [retrying, relogin(), bearerInterceptor(() => token), uncompressedTunnels, timed], pingTimeoutMs: ADMIN_PING_TIMEOUT_MS, receiveWindowBytes: ADMIN_RECEIVE_WINDOW_BYTES });
  }
  openConnections.add(opened.close);
  mark("transport ready");
  return { transport: opened.transport, token: () => token };
}

/**
 * The coordinator's URL and pin and a bearer token for its plain-HTTP endpoints (artifact
 * uploads), logging in first when the recorded session is missing or about to expire.
 */
export async function adminBearer(target: AdminTarget): Promise<{ url: string; pin: string | undefined; token: string }> {
  const s = await adminSession(target);
  return { url: s.url, pin: s.pin, token: target.apiToken ?? s.token };
}

/**
 * The coordinator, its pin and a bearer token: FLOTILLA_TOKEN, or the session recorded for the
 * organization, logging in first when it is missing or about to expire. `relogin` opens a new one.
 */
async function adminSession(target: AdminTarget): Promise<{
  url: string;
  pin: string | undefined;
  token: string;
  relogin(): Promise<{ pin: string; token: string }>;
}> {
  const creds = Credentials.of(target);
  const url = await targetUrl(target);
  const known = (await creds.context()).coordinators[url];
  const org = target.org;
  const relogin = async () => {
    const entry = await login(creds, url, { organization: org });
    return { pin: entry.pin, token: (org ? entry.orgSessions?.[org] : entry.session)?.token ?? "" };
  };
  if (target.apiToken) return { url, pin: known?.pin ?? (await firstUsePin(url)), token: target.apiToken, relogin };
  const current = org ? known?.orgSessions?.[org] : known?.session;
  if (known && current && current.expiresAt >= Date.now() + 30_000) return { url, pin: known.pin, token: current.token, relogin };
  return { url, ...(await relogin()), relogin };
}

const openConnections = new Set<() => void>();

/**
 * FLOTILLA_TIMING=1: each step of an admin command as one line on stderr, in ms since the process
 * started (docs/failure-behaviour.md, "Where an admin command's time goes"): the session ready,
 * the transport ready (over https, the coordinator's certificate fetched and checked against the
 * pin), and each attempt of each call sent and answered (the first call's time includes the TLS
 * handshake and HTTP/2 set-up of its connection).
 */
function mark(what: string): void {
  if (process.env.FLOTILLA_TIMING === "1") process.stderr.write(`flotilla timing: ${performance.now().toFixed(0)} ms ${what}\n`);
}

/** Marks each attempt of a call (innermost, so a retried call shows each attempt). */
const timed: Interceptor = (next) => async (req) => {
  mark(`${req.method.name} sent`);
  try {
    const res = await next(req);
    mark(`${req.method.name} answered`);
    return res;
  } catch (err) {
    mark(`${req.method.name} failed (${Code[ConnectError.from(err).code]})`);
    throw err;
  }
};

/** Retry-safe calls are sent again when the connection broke under them, saying so on stderr. */
const retrying = retryBrokenCalls({
  onRetry: (method, err, delayMs) =>
    process.stderr.write(`the coordinator did not answer ${method} (${err.rawMessage}); asking again in ${(delayMs / 1000).toFixed(1)} s\n`),
});

/**
 * An admin call waits this long for the answer to an HTTP/2 ping before it gives the connection
 * up: a coordinator busy with a large fleet may answer late, and a call that is not retry-safe
 * (a rollout start) must not fail because of it.
 */
const ADMIN_PING_TIMEOUT_MS = 30_000;

/** Closes the connections of every admin client made in this process, so it can exit. */
export function closeAdminClients(): void {
  for (const close of openConnections) close();
  openConnections.clear();
}
