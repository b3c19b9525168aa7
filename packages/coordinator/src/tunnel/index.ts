import { adminv1, agentv1, internalv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { agentTunnelService, listenStream } from "./agent-tunnel-service.ts";
import { deviceStream } from "../server/device-streams.ts";
import type { TunnelRegistry } from "./registry.ts";
import { replicaTunnelService, type ReplicaTunnels } from "./replicas.ts";
import { tunnelByteRoutes } from "./byte-path.ts";
import { tunnelService } from "./tunnel-service.ts";

export { TunnelRegistry } from "./registry.ts";
export { ReplicaTunnels } from "./replicas.ts";
export { REPLICA_AUTH_HEADER, verifyReplicaToken } from "./replica-auth.ts";

/**
 * Tunnels as a coordinator feature: the admin's TunnelService, the agent's AgentTunnelService
 * (and their plain HTTP/2 byte path), and the replicas' ReplicaTunnelService (tunnels to agents connected to another replica),
 * sharing `tunnels` (the coordinator shows it to tests); closing it ends every open tunnel.
 */
export function tunnelFeature(ctx: ServiceContext, tunnels: TunnelRegistry, replicas: ReplicaTunnels): Feature {
  const admin = tunnelService(ctx, tunnels, replicas);
  return {
    name: "tunnels",
    // The byte path (byte-path.ts): the same tunnels as plain HTTP/2 streams, beside the RPCs.
    http: tunnelByteRoutes(ctx, tunnels, admin.openTunnel),
    routes(router) {
      router.service(adminv1.TunnelService, admin.service);
      router.service(internalv1.ReplicaTunnelService, replicaTunnelService(tunnels));
      router.service(agentv1.AgentTunnelService, agentTunnelService(ctx, tunnels));
    },
    deviceStreams: [deviceStream(agentv1.AgentTunnelService.method.listen, listenStream(ctx, tunnels))],
    serviceNames: [adminv1.TunnelService.typeName, agentv1.AgentTunnelService.typeName, internalv1.ReplicaTunnelService.typeName],
    async close() {
      tunnels.close();
      await replicas.close();
    },
  };
}
