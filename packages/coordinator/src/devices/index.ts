import { adminv1, agentv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import { serveMethods, type Feature } from "../feature.ts";
import { agentService } from "./agent-service.ts";
import { deviceMethods } from "./devices.ts";
import { Hub } from "./hub.ts";
import { joinTokenMethods } from "./join-tokens.ts";

/**
 * Devices as a coordinator feature: the AgentService agents call (enroll, authenticate, watch,
 * report), AdminService's devices and join tokens, and the hub that wakes a device's Watch
 * stream when its desired state changes.
 */
export function devicesFeature(ctx: ServiceContext): Feature {
  const hub = new Hub(ctx.store);
  return {
    name: "devices",
    routes(router) {
      router.service(agentv1.AgentService, agentService(ctx, hub));
      serveMethods(router, adminv1.AdminService, { ...deviceMethods(ctx), ...joinTokenMethods(ctx) });
    },
    serviceNames: [agentv1.AgentService.typeName, adminv1.AdminService.typeName],
    close: () => hub.close(),
  };
}
