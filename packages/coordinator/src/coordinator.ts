import cluster from "node:cluster";
import { mkdir, readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createLogger, healthv1, selfSignedCertificate, type Identity, type Logger } from "@flotilla/protocol";
import { accessFeature } from "./access/index.ts";
import { Challenges } from "./access/challenges.ts";
import { authorizationInterceptor } from "./access/interceptor.ts";
import { cookieHeaderKey, remoteAddressKey } from "./access/principal.ts";
import { prepareSetupCode } from "./access/setup-code.ts";
import { webLoginFeature } from "./access/web-login.ts";
import { Auditor } from "./audit/auditor.ts";
import { internalUrlConflict, withDefaults, type CoordinatorConfig, type CoordinatorOptions } from "./config.ts";
import type { ServiceContext } from "./context.ts";
import { devicesFeature } from "./devices/index.ts";
import type { Feature } from "./feature.ts";
import { loadCoordinatorIdentity, loadEndorsements, loadOnlineIdentity } from "./identity/key-rotation.ts";
import { checkSharedIdentity } from "./identity/shared-identity.ts";
import { nixCacheFeature } from "./nixcache/index.ts";
import { releasesFeature } from "./releases/index.ts";
import { rolloutsFeature } from "./rollouts/index.ts";
import { installFeature } from "./install/index.ts";
import { healthService } from "./server/health-service.ts";
import { isLoopback, listen, type Listener, type RequestHandler } from "./server/listen.ts";
import { DatabaseLeases, soleLeases } from "./server/lease.ts";
import { fileLimitWarning } from "./server/file-limit.ts";
import { LoadShedder } from "./server/load-shedding.ts";
import { arrivedAtKey, SlowCalls } from "./server/slow-calls.ts";
import { ShutdownSignal } from "./server/shutdown-signal.ts";
import { deviceStreamRoute } from "./server/device-streams.ts";
import { storeErrorInterceptor } from "./server/store-errors.ts";
import { openStore, type Store } from "./store/index.ts";
import { telemetryFeature } from "./telemetry/index.ts";
import { ReplicaTunnels, tunnelFeature, TunnelRegistry, verifyReplicaToken } from "./tunnel/index.ts";
import { webConsoleFeature } from "./web/index.ts";

export type { CoordinatorOptions } from "./config.ts";

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
  /** This process's id among the replicas of its database (tokens for replica-to-replica calls name it). */
  readonly replicaId: string;
  close(): Promise<void>;
}

/** Splits "host:port" (IPv6 as "[::1]:7700"); throws on anything else. */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`invalid listen address ${JSON.stringify(text)}: expected host:port`);
  return { host: m[1] ?? m[2]!, port };
}

/** Everything the coordinator does, in the order it starts; it stops in the reverse order. */
function featureList(config: CoordinatorConfig, tls: boolean, tunnels: TunnelRegistry, replicaTunnels: ReplicaTunnels): ((ctx: ServiceContext) => Feature | Promise<Feature>)[] {
  return [
    accessFeature,
    (ctx) => webLoginFeature(ctx, { secureCookies: tls }),
    (ctx) => devicesFeature(ctx, config),
    (ctx) => releasesFeature(ctx, config),
    rolloutsFeature,
    (ctx) => telemetryFeature(ctx, config),
    (ctx) => nixCacheFeature(ctx, config),
    (ctx) => tunnelFeature(ctx, tunnels, replicaTunnels),
    webConsoleFeature,
    (ctx) => installFeature(ctx, config),
  ];
}

/** Stops features in the reverse order of their start. */
async function closeAll(features: Feature[]): Promise<void> {
  for (const f of [...features].reverse()) await f.close();
}

/**
 * Starts a coordinator: identity, store and TLS, then every feature, then the listener that
 * hosts them. Whatever it opened is closed again when a later step fails.
 */
export async function startCoordinator(
  opts: CoordinatorOptions,
  log: Logger = createLogger({ role: "coordinator" }),
): Promise<Coordinator> {
  const config = withDefaults(opts);
  const conflict = internalUrlConflict(config);
  if (conflict) throw new Error(conflict);
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const identity = await loadCoordinatorIdentity(config.dataDir);
  const endorsements = await loadEndorsements(config.dataDir);
  const onlineIdentity = await loadOnlineIdentity(config.dataDir);
  const { host, port } = parseHostPort(config.listen);
  const tls = await loadTls(config, host, identity);
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl });
  try {
    // Replicas share PostgreSQL; a SQLite database lives in the data directory beside the key.
    if (store.dialect === "postgres") await checkSharedIdentity(store.replicas, identity, endorsements);
  } catch (err) {
    await store.close();
    throw err;
  }

  const ctx: ServiceContext = {
    identity,
    onlineIdentity,
    endorsements,
    store,
    challenges: new Challenges(identity, store),
    auditor: new Auditor(store, log),
    log,
    publicUrl: config.publicUrl ?? "",
    sessionTtlMs: config.sessionTtlMs,
    keepaliveMs: config.keepaliveMs,
    offlineAfterMs: config.offlineAfterMs,
    leases: store.dialect === "postgres" ? new DatabaseLeases(store.replicas) : soleLeases(),
  };
  const tunnels = new TunnelRegistry();
  const replicaTunnels = new ReplicaTunnels(store.replicas, identity, tunnels, log);
  // Every open call listens for shutdown (thousands of Watch streams are normal): in a Set.
  const shutdown = new ShutdownSignal();
  const features: Feature[] = [];
  let listener: Listener;
  let internalListener: Listener | undefined;
  let setupCode: string | undefined;
  const shedder = new LoadShedder({ maxCalls: config.maxAgentCalls, maxLagMs: config.shedLagMs, log });
  features.push({ name: "load-shedding", serviceNames: [], close: () => shedder.close() });
  const slowCalls = new SlowCalls(log);
  features.push({ name: "slow-calls", serviceNames: [], close: () => slowCalls.close() });
  try {
    for (const start of featureList(config, tls !== undefined, tunnels, replicaTunnels)) features.push(await start(ctx));
    const connect: RequestHandler = connectNodeAdapter({
      routes(router) {
        for (const f of features) f.routes?.(router);
        router.service(healthv1.Health, healthService(features.flatMap((f) => f.serviceNames)));
      },
      // Slow calls are timed around everything else. Load is shed first, before any work. The
      // store's errors are mapped inside, so the authorization interceptor audits their codes,
      // and outside, for the store calls authorization itself makes (a session look-up while the
      // database is down answers `unavailable`, not `unknown`).
      interceptors: [slowCalls.interceptor(), shedder.interceptor(), storeErrorInterceptor(), authorizationInterceptor(store, ctx.auditor, (token) => verifyReplicaToken(identity.publicKey, replicaTunnels.id, token)), storeErrorInterceptor()],
      readMaxBytes: config.maxMessageBytes,
      writeMaxBytes: config.maxMessageBytes,
      shutdownSignal: shutdown.asAbortSignal(),
      contextValues: (req) =>
        createContextValues()
          .set(arrivedAtKey, performance.now())
          .set(remoteAddressKey, req.socket.remoteAddress ?? "")
          .set(cookieHeaderKey, typeof req.headers.cookie === "string" ? req.headers.cookie : ""),
    });
    const routes = [
      deviceStreamRoute({ store, shutdown, maxMessageBytes: config.maxMessageBytes }, features.flatMap((f) => f.deviceStreams ?? [])),
      ...features.flatMap((f) => (f.http ? [f.http] : [])),
    ];
    const handler: RequestHandler = (req, res) => {
      if (!routes.some((route) => route(req, res))) connect(req, res);
    };
    listener = await listen({ host, port, handler, tls });
    setupCode = await prepareSetupCode(store, config.setupCode);
    // Replicas reach each other (tunnels to agents connected elsewhere) at --internal-url, else
    // at the address they listen on; a `--replicas N` worker shares that port with its siblings
    // through the primary, so it also listens on a port of its own, on the same host.
    if (store.dialect === "postgres") {
      if (cluster.isWorker) internalListener = await listen({ host, port: 0, handler, tls, exclusive: true });
      await replicaTunnels.register(replicaAddress(config, internalListener ?? listener, host, tls !== undefined, log));
    }
  } catch (err) {
    await internalListener?.close();
    await closeAll(features);
    await ctx.leases.close();
    await store.close();
    throw err;
  }
  const publicUrl = config.publicUrl ?? defaultPublicUrl(listener, host, tls !== undefined);
  ctx.publicUrl = publicUrl;
  log.info("coordinator listening", { url: listener.url, database: store.dialect, id: identity.id });
  const few = fileLimitWarning();
  if (few) log.warn(few);

  return {
    url: listener.url,
    publicUrl,
    identity,
    onlineIdentity,
    store,
    setupCode,
    tunnels,
    replicaId: replicaTunnels.id,
    async close() {
      shutdown.abort();
      await closeAll(features);
      await internalListener?.close();
      await listener.close();
      await ctx.leases.close();
      await store.close();
    },
  };
}

/** The certificate to serve: the given files, else one made from our key off loopback, else none. */
async function loadTls(config: CoordinatorConfig, host: string, identity: Identity): Promise<{ certPem: string; keyPem: string } | undefined> {
  if (config.tlsCert || config.tlsKey) {
    if (!config.tlsCert || !config.tlsKey) throw new Error("--tls-cert and --tls-key go together");
    return { certPem: await readFile(config.tlsCert, "utf8"), keyPem: await readFile(config.tlsKey, "utf8") };
  }
  if (isLoopback(host)) return undefined;
  return selfSignedCertificate(identity, { hosts: [...new Set([host, hostname(), "localhost", "127.0.0.1"])] });
}

/**
 * Where the other replicas reach this one: --internal-url (with a worker's own port added under
 * `--replicas N`), else the --listen address, where a wildcard (0.0.0.0, ::) becomes this
 * machine's host name, which other hosts may not resolve: that is said once, at start.
 */
export function replicaAddress(
  config: Pick<CoordinatorConfig, "internalUrl" | "listen" | "replicas">,
  listener: Pick<Listener, "port">,
  host: string,
  tls: boolean,
  log: Logger,
): string {
  if (config.internalUrl) {
    const u = new URL(config.internalUrl);
    return config.replicas > 1 || cluster.isWorker ? `${u.protocol}//${u.hostname}:${listener.port}` : u.origin;
  }
  const address = defaultPublicUrl(listener, host, tls);
  if (isWildcard(host)) {
    log.warn("listening on a wildcard address: other replicas will dial this machine's host name; if they cannot resolve or reach it, give --internal-url", { listen: config.listen, address });
  }
  return address;
}

function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

function defaultPublicUrl(listener: Pick<Listener, "port">, host: string, tls: boolean): string {
  const h = isWildcard(host) ? hostname() : host.includes(":") ? `[${host}]` : host;
  return `${tls ? "https" : "http"}://${h}:${listener.port}`;
}
