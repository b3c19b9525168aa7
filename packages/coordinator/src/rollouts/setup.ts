import type { ServiceImpl } from "@connectrpc/connect";
import type { adminv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import { RolloutEngine } from "./engine.ts";
import { rolloutService } from "./rollout-service.ts";

/** The rollout engine, started, and its admin service, for the coordinator to register. */
export function startRollouts(
  ctx: ServiceContext,
  opts: { tickMs?: number } = {},
): { service: ServiceImpl<typeof adminv1.RolloutService>; close(): Promise<void> } {
  const tickMs = opts.tickMs ?? 1000;
  const engine = new RolloutEngine(ctx.store, ctx.log, { offlineAfterMs: ctx.offlineAfterMs, tickMs });
  ctx.rolloutEvents = engine;
  engine.start();
  return {
    service: rolloutService(ctx, engine, { watchRefreshMs: Math.max(tickMs, 1000) }),
    close: () => engine.close(),
  };
}
