import type { ConnectRouter } from "@connectrpc/connect";
import { adminv1, agentv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import { agentTunnelService } from "./agent-tunnel-service.ts";
import { TunnelRegistry } from "./registry.ts";
import { tunnelService } from "./tunnel-service.ts";

export { TunnelRegistry } from "./registry.ts";

/** Registers the admin TunnelService and the agent AgentTunnelService, sharing `tunnels`. */
export function registerTunnelServices(router: ConnectRouter, ctx: ServiceContext, tunnels: TunnelRegistry): void {
  router.service(adminv1.TunnelService, tunnelService(ctx, tunnels));
  router.service(agentv1.AgentTunnelService, agentTunnelService(ctx, tunnels));
}

/** The services' names, for the health service's list. */
export const tunnelServiceNames = [adminv1.TunnelService.typeName, agentv1.AgentTunnelService.typeName];

