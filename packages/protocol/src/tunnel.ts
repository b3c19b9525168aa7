import type { Interceptor } from "@connectrpc/connect";

/** The services whose messages carry tunnel bytes. */
const TUNNEL_SERVICES = new Set(["flotilla.admin.v1.TunnelService", "flotilla.agent.v1.AgentTunnelService", "flotilla.internal.v1.ReplicaTunnelService"]);

/**
 * Asks for tunnel streams uncompressed: their bytes are mostly encrypted (ssh, TLS) or already
 * compressed, so gzip only costs CPU on the coordinator, and it would hide how many bytes a
 * tunnel really holds in flight. Add it to any transport that opens tunnels.
 */
export const uncompressedTunnels: Interceptor = (next) => (req) => {
  if (TUNNEL_SERVICES.has(req.service.typeName)) {
    req.header.delete("connect-accept-encoding");
    req.header.delete("grpc-accept-encoding");
  }
  return next(req);
};
