/** An organization's own retention of its devices' logs and metric samples (TelemetryService). */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { MAX_DELAY_MS, type adminv1 } from "@flotilla/protocol";
import { adminOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { TelemetryRetention } from "../store/index.ts";

/** The shortest retention an organization may set: the sweep runs about once a minute. */
const MIN_RETENTION_MS = 60_000;

/** GetRetention and SetRetention; `defaultMs` is the coordinator's --log-retention-ms. */
export function retentionMethods(ctx: ServiceContext, defaultMs: number): Pick<ServiceImpl<typeof adminv1.TelemetryService>, "getRetention" | "setRetention"> {
  const { store } = ctx;
  const view = (r: TelemetryRetention) => ({
    logsMs: BigInt(r.logsMs || defaultMs),
    metricsMs: BigInt(r.metricsMs || defaultMs),
    logsOwn: r.logsMs > 0,
    metricsOwn: r.metricsMs > 0,
  });
  const check = (ms: bigint, what: string) => {
    if (ms !== 0n && (ms < BigInt(MIN_RETENTION_MS) || ms > BigInt(MAX_DELAY_MS) * 1000n)) {
      throw new ConnectError(`${what} retention must be at least 1 minute and at most about 60 years`, Code.InvalidArgument);
    }
    return Number(ms);
  };
  return {
    async getRetention(_req, hctx) {
      return { retention: view(await store.telemetry.getRetention(adminOf(hctx).orgId)) };
    },
    async setRetention(req, hctx) {
      const { orgId } = adminOf(hctx);
      const logs = check(req.logsMs, "log");
      const metrics = check(req.metricsMs, "metric");
      const current = await store.telemetry.getRetention(orgId);
      const next: TelemetryRetention = {
        logsMs: req.resetLogs ? 0 : logs || current.logsMs,
        metricsMs: req.resetMetrics ? 0 : metrics || current.metricsMs,
      };
      await store.telemetry.setRetention(orgId, next);
      return { retention: view(next) };
    },
  };
}
