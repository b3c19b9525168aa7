import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { agentv1 } from "@flotilla/protocol";
import { deviceOf, type DevicePrincipal } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { Frame } from "./frame-queue.ts";
import type { TunnelRegistry } from "./registry.ts";
import { background, drainFrom, firstMessage, pumpInto } from "./relay.ts";

const MAX_MESSAGE_CHARS = 256;

function toResponse(f: Frame): agentv1.AttachResponse {
  return create(
    agentv1.AttachResponseSchema,
    f.kind === "data" ? { frame: { case: "data", value: f.data } } : { frame: { case: "eof", value: {} } },
  );
}

/** Why an agent refused, as the admin sees it. */
function refusal(start: agentv1.AttachStart, port: number): ConnectError {
  const text = start.message.slice(0, MAX_MESSAGE_CHARS);
  switch (start.error) {
    case agentv1.AttachError.PORT_NOT_ALLOWED:
      return new ConnectError(text || `port ${port} is not in the agent's allowed tunnel ports`, Code.PermissionDenied);
    case agentv1.AttachError.CONNECT_FAILED:
      return new ConnectError(text || `the agent could not connect to port ${port}`, Code.FailedPrecondition);
    default:
      return new ConnectError(text || "the agent refused the tunnel", Code.FailedPrecondition);
  }
}

/**
 * A device's Listen stream: the tunnel requests for it, and a keep-alive when there were none for
 * a while. Served by Connect and, for agents, by the lean device-stream route
 * (server/device-streams.ts), which both call this.
 */
export function listenStream(ctx: ServiceContext, tunnels: TunnelRegistry) {
  return async function* listen(device: DevicePrincipal, _req: agentv1.ListenRequest, signal: AbortSignal): AsyncGenerator<MessageInitShape<typeof agentv1.ListenResponseSchema>> {
    const listener = tunnels.listen(device.deviceId);
    try {
      while (!signal.aborted) {
        const request = await listener.next(signal, ctx.keepaliveMs);
        if (request) yield { event: { case: "tunnel", value: request } };
        else if (!signal.aborted) yield { event: { case: "keepalive", value: timestampNow() } };
      }
    } finally {
      tunnels.failUndelivered(listener.close());
    }
  };
}

/**
 * The agent side of tunnels: Listen hands an agent the tunnel requests for its device, and
 * Attach carries one tunnel's bytes. An agent can only attach to its own device's tunnels.
 */
export function agentTunnelService(ctx: ServiceContext, tunnels: TunnelRegistry): ServiceImpl<typeof agentv1.AgentTunnelService> {
  const listen = listenStream(ctx, tunnels);
  return {
    listen: (req, hctx) => listen(deviceOf(hctx), req, hctx.signal),

    async *attach(reqs, hctx) {
      const { deviceId } = deviceOf(hctx);
      const it = reqs[Symbol.asyncIterator]();
      const first = await firstMessage(it, 20_000, "attach start");
      if (first.frame.case !== "start") throw new ConnectError("the first message must be start", Code.InvalidArgument);
      const start = first.frame.value;
      const tunnel = tunnels.claim(deviceId, start.tunnelId);
      if (!tunnel) throw new ConnectError(`no tunnel ${JSON.stringify(start.tunnelId.slice(0, 64))} waits for this device`, Code.NotFound);
      if (start.error !== agentv1.AttachError.UNSPECIFIED) {
        tunnel.answer({ ok: false, error: refusal(start, tunnel.port) });
        tunnels.release(tunnel);
        return;
      }
      tunnel.answer({ ok: true });
      const onAbort = () => tunnel.abort(new ConnectError("the device's agent disconnected", Code.Aborted));
      hctx.signal.addEventListener("abort", onAbort);
      try {
        const downstream = background(
          pumpInto(it, tunnel.down, (n) => (tunnel.bytesDown += n)),
          (err) => tunnel.abort(err),
        );
        yield* drainFrom(tunnel.up, toResponse);
        await downstream;
      } catch (err) {
        tunnel.abort(err);
        throw err;
      } finally {
        hctx.signal.removeEventListener("abort", onAbort);
        tunnels.release(tunnel);
      }
    },
  };
}
