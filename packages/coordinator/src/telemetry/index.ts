import { adminv1, agentv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { CoordinatorConfig } from "../config.ts";
import type { Feature } from "../feature.ts";
import { retentionMethods } from "./retention-service.ts";
import { telemetryAdminService } from "./admin-service.ts";
import { TelemetryCounters } from "./counters.ts";
import { LogFeed } from "./feed.ts";
import { ingestService } from "./ingest-service.ts";
import { OtlpExporter } from "./otlp.ts";
import { metricsHandler } from "./prometheus.ts";
import { startPeriodic } from "../server/periodic.ts";

/** The coordinator's telemetry options; see config.ts for each. */
export type TelemetryOptions = Pick<CoordinatorConfig, "logRetentionMs" | "logRetentionBytes" | "otlpUrl" | "metricsToken">;

/**
 * Telemetry as a coordinator feature: the agent's and the admin's TelemetryService, GET /metrics,
 * and the retention sweep (every minute, or every tenth of the retention age when that is
 * shorter): by the coordinator's receive time, and the size bound for each organization apart.
 */
export async function telemetryFeature(ctx: ServiceContext, opts: TelemetryOptions): Promise<Feature> {
  const counters = new TelemetryCounters();
  // Replicas sharing PostgreSQL hand each other's stored lines to their followers (feed.ts).
  const feed = new LogFeed(
    ctx.store.dialect === "postgres" ? { events: ctx.store.replicas.events, telemetry: ctx.store.telemetry, replicaId: ctx.leases.replicaId, log: ctx.log } : undefined,
  );
  const otlp = opts.otlpUrl ? new OtlpExporter(opts.otlpUrl, counters, ctx.log) : undefined;
  const age = opts.logRetentionMs;
  const bytes = opts.logRetentionBytes;
  // Once across replicas (server/lease.ts).
  const sweeper = await startPeriodic(
    async () => {
      const now = Date.now();
      // Each organization's own retention where it set one (0: the coordinator's).
      const own = await ctx.store.telemetry.listRetention();
      const cutoffs = new Map([...own].map(([org, r]) => [org, { logs: now - (r.logsMs || age), metrics: now - (r.metricsMs || age) }]));
      await ctx.store.telemetry.prune(now - age, bytes, cutoffs);
    },
    Math.min(60_000, Math.max(1000, age / 10)),
    ctx.log,
    "log retention sweep failed",
    { lease: { leases: ctx.leases, name: "log-retention" } },
  );
  return {
    name: "telemetry",
    routes(router) {
      router.service(agentv1.TelemetryService, ingestService(ctx, { feed, counters, otlp }));
      router.service(adminv1.TelemetryService, { ...telemetryAdminService(ctx, feed), ...retentionMethods(ctx, age) });
    },
    http: metricsHandler(ctx.store, counters, { token: opts.metricsToken, offlineAfterMs: ctx.offlineAfterMs }, ctx.log),
    serviceNames: [agentv1.TelemetryService.typeName, adminv1.TelemetryService.typeName],
    async close() {
      await sweeper.close();
      await feed.close();
    },
  };
}
