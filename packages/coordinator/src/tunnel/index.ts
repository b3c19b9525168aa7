import { adminv1, agentv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { agentTunnelService } from "./agent-tunnel-service.ts";
import type { TunnelRegistry } from "./registry.ts";
import { tunnelService } from "./tunnel-service.ts";

export { TunnelRegistry } from "./registry.ts";

/**
 * Tunnels as a coordinator feature: the admin's TunnelService and the agent's
 * AgentTunnelService, sharing `tunnels` (the coordinator shows it to tests); closing it ends
 * every open tunnel.
 */
export function tunnelFeature(ctx: ServiceContext, tunnels: TunnelRegistry): Feature {
  return {
    name: "tunnels",
    routes(router) {
      router.service(adminv1.TunnelService, tunnelService(ctx, tunnels));
      router.service(agentv1.AgentTunnelService, agentTunnelService(ctx, tunnels));
    },
    serviceNames: [adminv1.TunnelService.typeName, agentv1.AgentTunnelService.typeName],
    close: () => tunnels.close(),
  };
}
