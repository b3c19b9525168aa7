import { adminv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { relayRolloutChanges } from "../server/rollout-relay.ts";
import { RolloutEngine } from "./engine.ts";
import { rolloutService } from "./rollout-service.ts";

/**
 * Rollouts as a coordinator feature: the engine, started (it hears of release steps and
 * reconnecting devices through `ctx.rolloutEvents`), and its RolloutService.
 */
export function rolloutsFeature(ctx: ServiceContext, opts: { tickMs?: number } = {}): Feature {
  const tickMs = opts.tickMs ?? 1000;
  const engine = new RolloutEngine(ctx.store, ctx.log, { offlineAfterMs: ctx.offlineAfterMs, tickMs, leases: ctx.leases });
  ctx.rolloutEvents = engine;
  engine.start();
  // What this replica commits wakes rollout watch streams on the others at once.
  const unrelay = relayRolloutChanges(ctx.store.replicas.events, ctx.leases.replicaId, { onChange: (fn) => engine.onCommit(fn) }, (orgId, id) => engine.changed(orgId, id), ctx.log);
  const service = rolloutService(ctx, engine, { watchRefreshMs: Math.max(tickMs, 1000) });
  return {
    name: "rollouts",
    routes(router) {
      router.service(adminv1.RolloutService, service);
    },
    serviceNames: [adminv1.RolloutService.typeName],
    close: () => {
      unrelay();
      return engine.close();
    },
  };
}
