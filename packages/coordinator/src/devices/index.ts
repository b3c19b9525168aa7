import { join } from "node:path";
import { adminv1, agentv1 } from "@flotilla/protocol";
import type { CoordinatorConfig } from "../config.ts";
import type { ServiceContext } from "../context.ts";
import { serveMethods, type Feature } from "../feature.ts";
import { agentService } from "./agent-service.ts";
import { deviceMethods } from "./devices.ts";
import { Hub } from "./hub.ts";
import { joinTokenMethods } from "./join-tokens.ts";
import { moveMethods } from "./move.ts";
import { TufRepository } from "../tuf/repository.ts";

/**
 * Devices as a coordinator feature: the AgentService agents call (enroll, authenticate, watch,
 * report), AdminService's devices and join tokens, and the hub that wakes a device's Watch
 * stream when its desired state changes.
 */
export function devicesFeature(ctx: ServiceContext, config?: Pick<CoordinatorConfig, "dataDir" | "tufTimestampTtlMs" | "tufRefreshMs">): Feature {
  const hub = new Hub(ctx.store);
  // Read only (moves check the organizations' roots); the releases feature signs.
  const tuf = config && new TufRepository(join(config.dataDir, "tuf"), ctx.onlineIdentity, { timestampTtlMs: config.tufTimestampTtlMs, snapshotTtlMs: config.tufTimestampTtlMs, refreshMs: config.tufRefreshMs });
  const currentRoot = async (orgId: string) => (await tuf?.root(orgId))?.toJSON();
  return {
    name: "devices",
    routes(router) {
      router.service(agentv1.AgentService, agentService(ctx, hub));
      serveMethods(router, adminv1.AdminService, { ...deviceMethods(ctx), ...joinTokenMethods(ctx), ...moveMethods(ctx, currentRoot) });
    },
    serviceNames: [agentv1.AgentService.typeName, adminv1.AdminService.typeName],
    close: () => hub.close(),
  };
}
