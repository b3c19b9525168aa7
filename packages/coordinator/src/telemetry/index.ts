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

/** The coordinator's telemetry options; see config.ts for each. */
export type TelemetryOptions = Pick<CoordinatorConfig, "logRetentionMs" | "logRetentionBytes" | "otlpUrl" | "metricsToken">;

/**
 * Telemetry as a coordinator feature: the agent's and the admin's TelemetryService, GET /metrics,
 * and the retention sweep (every minute, or every tenth of the retention age when that is
 * shorter): by the coordinator's receive time, and the size bound for each organization apart.
 */
export function telemetryFeature(ctx: ServiceContext, opts: TelemetryOptions): Feature {
  const counters = new TelemetryCounters();
  const feed = new LogFeed();
  const otlp = opts.otlpUrl ? new OtlpExporter(opts.otlpUrl, counters, ctx.log) : undefined;
  const age = opts.logRetentionMs;
  const bytes = opts.logRetentionBytes;
  let sweeping = false;
  const sweep = () => {
    if (sweeping) return;
    sweeping = true;
    const now = Date.now();
    ctx.store.telemetry
      .listRetention()
      .then((own) => {
        // Each organization's own retention where it set one (0: the coordinator's).
        const cutoffs = new Map([...own].map(([org, r]) => [org, { logs: now - (r.logsMs || age), metrics: now - (r.metricsMs || age) }]));
        return ctx.store.telemetry.prune(now - age, bytes, cutoffs);
      })
      .catch((err: unknown) => ctx.log.warn("log retention sweep failed", { err: (err as Error).message }))
      .finally(() => (sweeping = false));
  };
  const timer = setInterval(sweep, Math.min(60_000, Math.max(1000, age / 10)));
  timer.unref();
  return {
    name: "telemetry",
    routes(router) {
      router.service(agentv1.TelemetryService, ingestService(ctx, { feed, counters, otlp }));
      router.service(adminv1.TelemetryService, { ...telemetryAdminService(ctx, feed), ...retentionMethods(ctx, age) });
    },
    http: metricsHandler(ctx.store, counters, { token: opts.metricsToken, offlineAfterMs: ctx.offlineAfterMs }, ctx.log),
    serviceNames: [agentv1.TelemetryService.typeName, adminv1.TelemetryService.typeName],
    close() {
      clearInterval(timer);
    },
  };
}
