import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { adminv1 } from "@flotilla/protocol";
import { adminOf, remoteAddressKey, type AdminPrincipal } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import { isOnline } from "../devices/convert.ts";
import type { DeviceRow } from "../store/index.ts";
import type { Frame } from "./frame-queue.ts";
import type { TunnelRegistry, Tunnel } from "./registry.ts";
import { background, drainFrom, firstMessage, pumpInto } from "./relay.ts";

/** How long an admin may take to name the target, and an agent to answer a tunnel request. */
const FIRST_MESSAGE_MS = 20_000;
/** How long an online device's agent may take to (re)open its Listen stream. */
const LISTENER_WAIT_MS = 5_000;

/** What the audit entry of a tunnel says. */
interface TunnelRecord {
  device: string;
  port: number;
  startedAt: number;
  tunnel?: Tunnel;
  opened: boolean;
  /** "both": each side sent eof; "admin": the admin ended the call. */
  closedBy: "both" | "admin";
}

function toResponse(f: Frame): adminv1.OpenResponse {
  return create(
    adminv1.OpenResponseSchema,
    f.kind === "data" ? { frame: { case: "data", value: f.data } } : { frame: { case: "eof", value: {} } },
  );
}

/**
 * The admin side of tunnels: Open finds the device in the caller's organization, asks its
 * agent (over the agent's Listen stream) to connect to the port, then relays bytes both ways
 * with bounded buffers. Each tunnel, refused or not, leaves one audit entry when it ends: who,
 * device, port, start, end, bytes each way, outcome.
 */
export function tunnelService(ctx: ServiceContext, tunnels: TunnelRegistry): ServiceImpl<typeof adminv1.TunnelService> {
  const { store } = ctx;

  async function findDevice(p: AdminPrincipal, ref: string): Promise<DeviceRow | undefined> {
    return (await store.devices.getDevice(p.orgId, ref)) ?? (await store.devices.getDeviceByName(p.orgId, ref));
  }

  async function audit(hctx: HandlerContext, p: AdminPrincipal, t: TunnelRecord, outcome: string) {
    const endedAt = Date.now();
    await ctx.auditor.record({
      orgId: p.orgId,
      actor: p.actor,
      action: "tunnel",
      target: t.device,
      source: hctx.values.get(remoteAddressKey),
      outcome,
      time: endedAt,
      detail: JSON.stringify({
        port: t.port,
        deviceId: t.tunnel?.deviceId ?? "",
        tunnelId: t.tunnel?.id ?? "",
        start: new Date(t.startedAt).toISOString(),
        end: new Date(endedAt).toISOString(),
        bytesToDevice: t.tunnel?.bytesUp ?? 0,
        bytesFromDevice: t.tunnel?.bytesDown ?? 0,
        ...(t.opened ? { closedBy: t.closedBy } : {}),
      }),
    });
  }

  return {
    async *open(reqs, hctx) {
      const p = adminOf(hctx);
      const it = reqs[Symbol.asyncIterator]();
      const first = await firstMessage(it, FIRST_MESSAGE_MS, "tunnel target");
      if (first.frame.case !== "target") throw new ConnectError("the first message must name the target", Code.InvalidArgument);
      const { device: ref, port } = first.frame.value;
      if (!ref || ref.length > 128) throw new ConnectError("a device id or name is required", Code.InvalidArgument);
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new ConnectError(`invalid port ${port}: expected 1 to 65535`, Code.InvalidArgument);
      }
      const record: TunnelRecord = { device: ref, port, startedAt: Date.now(), opened: false, closedBy: "both" };
      let outcome = "ok";
      let finished = false;
      let tunnel: Tunnel | undefined;
      const onAbort = () => tunnel?.abort(new ConnectError("the admin closed the tunnel", Code.Canceled));
      hctx.signal.addEventListener("abort", onAbort);
      try {
        const device = await findDevice(p, ref);
        if (!device) throw new ConnectError(`no device ${JSON.stringify(ref)}`, Code.NotFound);
        record.device = device.name;
        if (device.lifecycle !== "approved") {
          throw new ConnectError(`device ${device.name} is ${device.lifecycle}, not approved`, Code.FailedPrecondition);
        }
        const online = isOnline(device, Date.now(), ctx.offlineAfterMs);
        if (online) await tunnels.waitForListener(device.id, LISTENER_WAIT_MS, hctx.signal);
        tunnel = tunnels.open(p.orgId, device.id, port);
        if (!tunnel) {
          if (!online) throw new ConnectError(`device ${device.name} is offline`, Code.FailedPrecondition);
          throw new ConnectError(`device ${device.name} is online but its agent does not offer tunnels (capability "tunnel")`, Code.FailedPrecondition);
        }
        record.tunnel = tunnel;
        const t = tunnel;
        const timer = setTimeout(
          () => t.abort(new ConnectError(`device ${device.name} did not answer the tunnel request`, Code.DeadlineExceeded)),
          FIRST_MESSAGE_MS,
        );
        const answer = await t.attached.finally(() => clearTimeout(timer));
        if (!answer.ok) throw answer.error;

        record.opened = true;
        yield create(adminv1.OpenResponseSchema, {
          frame: { case: "opened", value: { tunnelId: t.id, deviceId: device.id, deviceName: device.name } },
        });
        const upstream = background(
          pumpInto(it, t.up, (n) => (t.bytesUp += n)),
          (err) => t.abort(err),
        );
        yield* drainFrom(t.down, toResponse);
        await upstream;
        finished = true;
      } catch (err) {
        const ce = ConnectError.from(err);
        // An admin ending an open tunnel (Ctrl-C, ssh killing its ProxyCommand) is a normal end.
        if (!(record.opened && hctx.signal.aborted)) outcome = ce.code === Code.PermissionDenied ? "refused" : `error:${Code[ce.code]}`;
        throw ce;
      } finally {
        hctx.signal.removeEventListener("abort", onAbort);
        // Also reached through return() when the call is cancelled at a yield.
        if (!finished && outcome === "ok") record.closedBy = "admin";
        if (tunnel) {
          if (!finished) tunnel.abort(new ConnectError("the admin closed the tunnel", Code.Canceled));
          tunnels.release(tunnel);
        }
        await audit(hctx, p, record, outcome);
      }
    },
  };
}
