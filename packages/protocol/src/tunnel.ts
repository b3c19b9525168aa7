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

/**
 * The tunnels' byte path beside Connect (docs/tunnels.md, "How it works"): plain HTTP/2 POST
 * streams whose request body carries the caller's bytes and whose response body the other
 * side's, each body's end being that side's eof. Same credentials as the RPCs (bearer token).
 */
export const TUNNEL_OPEN_PATH = "/flotilla.tunnel/open";
export const TUNNEL_ATTACH_PATH = "/flotilla.tunnel/attach";
/** Request headers: the target of an open (device id or name, port), the tunnel of an attach. */
export const TUNNEL_DEVICE_HEADER = "flotilla-tunnel-device";
export const TUNNEL_PORT_HEADER = "flotilla-tunnel-port";
export const TUNNEL_ID_HEADER = "flotilla-tunnel-id";
/** Response headers of an open tunnel. */
export const TUNNEL_DEVICE_ID_HEADER = "flotilla-device-id";
export const TUNNEL_DEVICE_NAME_HEADER = "flotilla-device-name";
/**
 * A refusal (in the headers of a non-200 answer) or a failure after the tunnel opened (in the
 * trailers): the Connect code as a number, and a one-line message.
 */
export const TUNNEL_ERROR_CODE_HEADER = "flotilla-error-code";
export const TUNNEL_ERROR_MESSAGE_HEADER = "flotilla-error-message";
