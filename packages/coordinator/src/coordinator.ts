import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { hostname } from "node:os";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  adminv1,
  agentv1,
  createLogger,
  hashSecret,
  healthv1,
  selfSignedCertificate,
  type Identity,
  type Logger,
} from "@flotilla/protocol";
import { randomBytes } from "node:crypto";
import { Challenges } from "./auth/challenges.ts";
import { authorizationInterceptor } from "./auth/interceptor.ts";
import { webLoginHandler } from "./auth/web-login.ts";
import { cookieHeaderKey, remoteAddressKey } from "./auth/principal.ts";
import { Auditor } from "./audit/auditor.ts";
import type { ServiceContext } from "./context.ts";
import { Hub } from "./hub.ts";
import { loadCoordinatorIdentity, loadEndorsements, loadOnlineIdentity } from "./key-rotation.ts";
import { nixCacheHandler } from "./nixcache/http-cache.ts";
import { nixService } from "./nixcache/nix-service.ts";
import { isLoopback, listen, type Listener, type RequestHandler } from "./server/listen.ts";
import { adminService } from "./services/admin-service.ts";
import { normalizeSetupCode } from "./services/access-service.ts";
import { agentService } from "./services/agent-service.ts";
import { healthService } from "./services/health-service.ts";
import { openStore, type Store } from "./store/index.ts";
import { createTelemetry, type TelemetryOptions } from "./telemetry/index.ts";
import { registerTunnelServices, tunnelServiceNames, TunnelRegistry } from "./tunnel/index.ts";
import { releasesHttpHandler } from "./releases/http.ts";
import { releaseService } from "./releases/release-service.ts";
import { startReleases } from "./releases/setup.ts";
import { startRollouts } from "./rollouts/setup.ts";

/** Everything a coordinator needs to start; see config.ts for each option's meaning. */
export interface CoordinatorOptions extends TelemetryOptions {
  dataDir: string;
  /** host:port to listen on. */
  listen: string;
  databaseUrl?: string;
  tlsCert?: string;
  tlsKey?: string;
  publicUrl?: string;
  setupCode?: string;
  maxMessageBytes: number;
  sessionTtlMs: number;
  keepaliveMs: number;
  offlineAfterMs: number;
  /** Default: one day. */
  tufTimestampTtlMs?: number;
  /** Default: one hour. */
  tufRefreshMs?: number;
}

export interface Coordinator {
  /** Where this coordinator answers, e.g. http://127.0.0.1:7700. */
  readonly url: string;
  /** The address join strings carry. */
  readonly publicUrl: string;
  readonly identity: Identity;
  /** The online key: TUF snapshot/timestamp signatures, secrets sealed at rest. */
  readonly onlineIdentity: Identity;
  readonly store: Store;
  /** The owner setup code, when no owner exists yet. */
  readonly setupCode: string | undefined;
  /** Open tunnels and the agents listening for them (tests read its held-bytes gauge). */
  readonly tunnels: TunnelRegistry;
  close(): Promise<void>;
}

/** Splits "host:port" (IPv6 as "[::1]:7700"); throws on anything else. */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`invalid listen address ${JSON.stringify(text)}: expected host:port`);
  return { host: m[1] ?? m[2]!, port };
}

function newSetupCode(): string {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const chars = [...randomBytes(16)].map((b) => alphabet[b % alphabet.length]);
  return [0, 4, 8, 12].map((i) => chars.slice(i, i + 4).join("")).join("-");
}

/** Ensures an unused setup code exists while no owner does; returns it for printing. */
async function prepareSetupCode(store: Store, given: string | undefined): Promise<string | undefined> {
  if (await store.settings.getSetting("setup_code_used")) return undefined;
  const code = given ?? newSetupCode();
  await store.settings.setSetting("setup_code_hash", hashSecret(normalizeSetupCode(code)));
  return code;
}

/** Starts a coordinator: identity, store, services, listener. */
export async function startCoordinator(
  opts: CoordinatorOptions,
  log: Logger = createLogger({ role: "coordinator" }),
): Promise<Coordinator> {
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const identity = await loadCoordinatorIdentity(opts.dataDir);
  const endorsements = await loadEndorsements(opts.dataDir);
  const onlineIdentity = await loadOnlineIdentity(opts.dataDir);
  const store = await openStore({ dataDir: opts.dataDir, databaseUrl: opts.databaseUrl });
  const { host, port } = parseHostPort(opts.listen);

  let tls: { certPem: string; keyPem: string } | undefined;
  if (opts.tlsCert || opts.tlsKey) {
    if (!opts.tlsCert || !opts.tlsKey) throw new Error("--tls-cert and --tls-key go together");
    tls = { certPem: await readFile(opts.tlsCert, "utf8"), keyPem: await readFile(opts.tlsKey, "utf8") };
  } else if (!isLoopback(host)) {
    tls = await selfSignedCertificate(identity, { hosts: [...new Set([host, hostname(), "localhost", "127.0.0.1"])] });
  }

  const hub = new Hub(store);
  const auditor = new Auditor(store, log);
  const shutdown = new AbortController();
  const tunnels = new TunnelRegistry();
  const ctx: ServiceContext = {
    identity,
    onlineIdentity,
    endorsements,
    store,
    challenges: new Challenges(identity, store),
    hub,
    auditor,
    log,
    publicUrl: opts.publicUrl ?? "",
    sessionTtlMs: opts.sessionTtlMs,
    keepaliveMs: opts.keepaliveMs,
    offlineAfterMs: opts.offlineAfterMs,
  };
  const telemetry = createTelemetry(ctx, opts);
  const releases = await startReleases(ctx, opts);
  const rollouts = startRollouts(ctx);
  const handler = connectNodeAdapter({
    routes(router) {
      telemetry.routes(router);
      router.service(adminv1.ReleaseService, releaseService(ctx, releases.tuf, releases.artifacts));
      router.service(adminv1.RolloutService, rollouts.service);
      router.service(agentv1.AgentService, agentService(ctx));
      router.service(adminv1.AdminService, adminService(ctx));
      router.service(adminv1.NixService, nixService(ctx));
      registerTunnelServices(router, ctx, tunnels);
      router.service(
        healthv1.Health,
        healthService([agentv1.AgentService.typeName, adminv1.AdminService.typeName, ...telemetry.serviceNames, ...tunnelServiceNames]),
      );
    },
    interceptors: [authorizationInterceptor(store, auditor)],
    readMaxBytes: opts.maxMessageBytes,
    writeMaxBytes: opts.maxMessageBytes,
    shutdownSignal: shutdown.signal,
    contextValues: (req) =>
      createContextValues()
        .set(remoteAddressKey, req.socket.remoteAddress ?? "")
        .set(cookieHeaderKey, typeof req.headers.cookie === "string" ? req.headers.cookie : ""),
  });

  const webLogin = webLoginHandler(ctx, { secureCookies: tls !== undefined });
  const nixCache = nixCacheHandler(ctx, { dir: join(opts.dataDir, "nix") });
  const releasesHttp = releasesHttpHandler({ store, artifacts: releases.artifacts, tuf: releases.tuf, log, auditor });
  const connect: RequestHandler = handler;
  const routes: RequestHandler = (req, res) => {
    if (!webLogin(req, res) && !nixCache(req, res) && !telemetry.http(req, res) && !releasesHttp(req, res)) connect(req, res);
  };

  let listener: Listener;
  try {
    listener = await listen({ host, port, handler: routes, tls });
  } catch (err) {
    telemetry.close();
    await rollouts.close();
    releases.close();
    hub.close();
    await store.close();
    throw err;
  }
  const publicUrl = opts.publicUrl ?? defaultPublicUrl(listener, host, tls !== undefined);
  ctx.publicUrl = publicUrl;
  const setupCode = await prepareSetupCode(store, opts.setupCode);
  log.info("coordinator listening", { url: listener.url, database: store.dialect, id: identity.id });

  return {
    url: listener.url,
    publicUrl,
    identity,
    onlineIdentity,
    store,
    setupCode,
    tunnels,
    async close() {
      shutdown.abort();
      telemetry.close();
      tunnels.close();
      await rollouts.close();
      releases.close();
      hub.close();
      await listener.close();
      await store.close();
    },
  };
}

function defaultPublicUrl(listener: Listener, host: string, tls: boolean): string {
  const unspecified = host === "0.0.0.0" || host === "::";
  const h = unspecified ? hostname() : host.includes(":") ? `[${host}]` : host;
  return `${tls ? "https" : "http"}://${h}:${listener.port}`;
}
