import type { ConnectRouter } from "@connectrpc/connect";
import { adminv1, agentv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { RequestHandler } from "../server/listen.ts";
import { telemetryAdminService } from "./admin-service.ts";
import { TelemetryCounters } from "./counters.ts";
import { LogFeed } from "./feed.ts";
import { ingestService } from "./ingest-service.ts";
import { OtlpExporter } from "./otlp.ts";
import { metricsHandler } from "./prometheus.ts";

/** The coordinator's telemetry options; see config.ts for each. */
export interface TelemetryOptions {
  /** Logs and metric samples older than this are deleted (default 7 days). */
  logRetentionMs?: number;
  /** Log lines beyond about this many bytes are deleted, oldest first (default 1 GiB). */
  logRetentionBytes?: number;
  /** Forward device metrics to this OTLP/HTTP collector (JSON), e.g. http://otel:4318. */
  otlpUrl?: string;
  /** Bearer token for GET /metrics; without it /metrics answers loopback callers only. */
  metricsToken?: string;
}

export const DEFAULT_LOG_RETENTION_MS = 7 * 24 * 3600 * 1000;
export const DEFAULT_LOG_RETENTION_BYTES = 1024 ** 3;

/** The coordinator's logs and metrics: both TelemetryServices, /metrics, retention. */
export interface Telemetry {
  /** Registers the agent and admin TelemetryService on the router. */
  routes(router: ConnectRouter): void;
  /** Answers GET /metrics; returns false for any other path. */
  http(req: Parameters<RequestHandler>[0], res: Parameters<RequestHandler>[1]): boolean;
  /** Service names for the health service. */
  readonly serviceNames: string[];
  close(): void;
}

/** Sets up telemetry and starts the retention sweep (every minute, and at once). */
export function createTelemetry(ctx: ServiceContext, opts: TelemetryOptions): Telemetry {
  const counters = new TelemetryCounters();
  const feed = new LogFeed();
  const otlp = opts.otlpUrl ? new OtlpExporter(opts.otlpUrl, counters, ctx.log) : undefined;
  const age = opts.logRetentionMs ?? DEFAULT_LOG_RETENTION_MS;
  const bytes = opts.logRetentionBytes ?? DEFAULT_LOG_RETENTION_BYTES;
  let sweeping = false;
  const sweep = () => {
    if (sweeping) return;
    sweeping = true;
    ctx.store.telemetry
      .prune(Date.now() - age, bytes)
      .catch((err: unknown) => ctx.log.warn("log retention sweep failed", { err: (err as Error).message }))
      .finally(() => (sweeping = false));
  };
  const timer = setInterval(sweep, Math.min(60_000, Math.max(1000, age / 10)));
  timer.unref();
  return {
    routes(router) {
      router.service(agentv1.TelemetryService, ingestService(ctx, { feed, counters, otlp }));
      router.service(adminv1.TelemetryService, telemetryAdminService(ctx, feed));
    },
    http: metricsHandler(ctx.store, counters, { token: opts.metricsToken, offlineAfterMs: ctx.offlineAfterMs }, ctx.log),
    serviceNames: [agentv1.TelemetryService.typeName, adminv1.TelemetryService.typeName],
    close() {
      clearInterval(timer);
    },
  };
}
