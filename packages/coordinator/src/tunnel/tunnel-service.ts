import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { adminv1, internalv1 } from "@flotilla/protocol";
import { adminOf, remoteAddressKey, type AdminPrincipal } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import { isOnline } from "../devices/convert.ts";
import type { DeviceRow } from "../store/index.ts";
import type { Frame } from "./frame-queue.ts";
import { MAX_CHUNK_BYTES, type TunnelRegistry, type Tunnel } from "./registry.ts";
import { background, drainFrom, firstMessage, pumpInto, unlessAborted } from "./relay.ts";
import type { ReplicaTunnels } from "./replicas.ts";

/** How long an admin may take to name the target, and an agent to answer a tunnel request. */
const FIRST_MESSAGE_MS = 20_000;
/** How long an online device's agent may take to (re)open its Listen stream. */
const LISTENER_WAIT_MS = 5_000;
/**
 * How a forwarded call ends when the connection to the holder broke, rather than the holder
 * answering (Node ends the streams of a cut connection as cancelled).
 */
const BROKEN_CONNECTION = [Code.Canceled, Code.Unavailable, Code.Unknown, Code.Internal, Code.DeadlineExceeded];

/** An admin's request for a tunnel: who (allowed to open tunnels), from where, and its end. */
export interface AdminCall {
  principal: AdminPrincipal;
  /** The caller's address, for the audit entry. */
  source: string;
  /** Aborts when the admin goes away. */
  signal: AbortSignal;
}

export type OpenTunnel = (call: AdminCall, it: AsyncIterator<adminv1.OpenRequest>) => AsyncGenerator<adminv1.OpenResponse>;

/** What the audit entry of a tunnel says. */
interface TunnelRecord {
  device: string;
  port: number;
  startedAt: number;
  /** The tunnel here, or what the admin's replica counts of one carried by another replica. */
  tunnel?: { id: string; deviceId: string; bytesUp: number; bytesDown: number };
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
export function tunnelService(
  ctx: ServiceContext,
  tunnels: TunnelRegistry,
  replicas: ReplicaTunnels,
): { service: ServiceImpl<typeof adminv1.TunnelService>; openTunnel: OpenTunnel } {
  const { store } = ctx;

  async function findDevice(p: AdminPrincipal, ref: string): Promise<DeviceRow | undefined> {
    return (await store.devices.getDevice(p.orgId, ref)) ?? (await store.devices.getDeviceByName(p.orgId, ref));
  }

  async function audit(call: AdminCall, t: TunnelRecord, outcome: string) {
    const p = call.principal;
    const endedAt = Date.now();
    await ctx.auditor.record({
      orgId: p.orgId,
      actor: p.actor,
      action: "tunnel",
      target: t.device,
      source: call.source,
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

  /**
   * One tunnel for an admin whose permission `tunnel:open` was checked: `it` yields the target,
   * then data and eof (from Connect messages, or from the raw byte path, byte-path.ts); the
   * generator yields opened, then data and eof.
   */
  async function* openTunnel(call: AdminCall, it: AsyncIterator<adminv1.OpenRequest>): AsyncGenerator<adminv1.OpenResponse> {
    const p = call.principal;
    const hctx = { signal: call.signal };
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
      const place = online ? await replicas.locate(device.id, LISTENER_WAIT_MS, hctx.signal) : undefined;
      if (place && !place.local) {
        // The agent listens on another replica: carry the tunnel there.
        ctx.log.info("tunnel carried to the replica holding the device", { device: device.name, port, replica: place.replicaId });
        yield* forwarded(replicas, place.replicaId, it, device, p.orgId, port, record, hctx.signal);
        finished = true;
        return;
      }
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
      await unlessAborted(upstream, t.signal);
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
      await audit(call, record, outcome);
    }
  }

  return {
    openTunnel,
    service: {
      open(reqs, hctx) {
        const call = { principal: adminOf(hctx), source: hctx.values.get(remoteAddressKey), signal: hctx.signal };
        return openTunnel(call, reqs[Symbol.asyncIterator]());
      },
    },
  };
}

function adminFrame(m: internalv1.ForwardResponse): adminv1.OpenResponse {
  return create(
    adminv1.OpenResponseSchema,
    m.frame.case === "data" ? { frame: { case: "data", value: m.frame.value } } : { frame: { case: "eof", value: {} } },
  );
}

/**
 * An admin's tunnel carried by replica `replicaId`, which holds the device's Listen stream.
 * Each side's messages are read only once the other side has taken the previous one, so a slow
 * side holds the other back through HTTP/2 flow control across both hops, and the holder's
 * bounded queues apply. When the holder dies the admin's call ends with Aborted (as when a local
 * agent disconnects), not Unavailable, which the CLI reads as "cannot reach the coordinator".
 */
async function* forwarded(
  replicas: ReplicaTunnels,
  replicaId: string,
  it: AsyncIterator<adminv1.OpenRequest>,
  device: DeviceRow,
  orgId: string,
  port: number,
  record: TunnelRecord,
  signal: AbortSignal,
): AsyncGenerator<adminv1.OpenResponse> {
  const counts = { id: "", deviceId: device.id, bytesUp: 0, bytesDown: 0 };
  record.tunnel = counts;
  let remote: Awaited<ReturnType<ReplicaTunnels["connect"]>>;
  try {
    remote = await replicas.connect(replicaId);
  } catch (err) {
    throw new ConnectError(`cannot reach the replica holding device ${device.name}'s connection: ${ConnectError.from(err).rawMessage}`, Code.Aborted);
  }
  if (!remote) throw new ConnectError(`the replica holding device ${device.name}'s connection is gone; try again`, Code.Aborted);
  const ac = new AbortController();
  const onAbort = () => ac.abort(signal.reason);
  signal.addEventListener("abort", onAbort);
  async function* upstream(): AsyncGenerator<internalv1.ForwardRequest> {
    yield create(internalv1.ForwardRequestSchema, { frame: { case: "target", value: { orgId, deviceId: device.id, port } } });
    for (;;) {
      const r = await it.next();
      const frame = r.done ? ({ case: "eof" } as const) : r.value.frame;
      if (frame.case === "eof") {
        yield create(internalv1.ForwardRequestSchema, { frame: { case: "eof", value: {} } });
        return;
      }
      if (frame.case !== "data") throw new ConnectError(`unexpected ${frame.case ?? "empty"} frame in an open tunnel`, Code.InvalidArgument);
      if (frame.value.length > MAX_CHUNK_BYTES) throw new ConnectError(`tunnel data frames are at most ${MAX_CHUNK_BYTES} bytes`, Code.InvalidArgument);
      counts.bytesUp += frame.value.length;
      yield create(internalv1.ForwardRequestSchema, { frame: { case: "data", value: frame.value } });
    }
  }
  let failed = false;
  try {
    const res = remote.client.forward(upstream(), { headers: remote.headers, signal: ac.signal })[Symbol.asyncIterator]();
    const first = await firstMessage(res, FIRST_MESSAGE_MS + 10_000, "answer from the replica holding the device");
    if (first.frame.case !== "opened") throw new ConnectError("the replica holding the device answered out of order", Code.Internal);
    counts.id = first.frame.value.tunnelId;
    record.opened = true;
    yield create(adminv1.OpenResponseSchema, {
      frame: { case: "opened", value: { tunnelId: counts.id, deviceId: device.id, deviceName: device.name } },
    });
    for (let r = await res.next(); !r.done; r = await res.next()) {
      if (r.value.frame.case === "data") counts.bytesDown += r.value.frame.value.length;
      else if (r.value.frame.case !== "eof") continue;
      yield adminFrame(r.value);
    }
  } catch (err) {
    const ce = ConnectError.from(err);
    if (signal.aborted) throw ce;
    // The connection to the holder may be broken: the next tunnel there opens a new one.
    failed = BROKEN_CONNECTION.includes(ce.code);
    // The holder's own answers (the agent refused, the port is not allowed) pass through as they
    // are; a holder that vanished (killed, its connection cut) ends the tunnel with Aborted.
    if (!record.opened && ce.code !== Code.Unavailable && ce.code !== Code.Unknown && ce.code !== Code.Internal) {
      throw new ConnectError(ce.rawMessage, ce.code);
    }
    throw new ConnectError(
      `the tunnel to device ${device.name} ended: the coordinator replica relaying it went away (${ce.rawMessage}); once the device reconnects, open it again`,
      Code.Aborted,
    );
  } finally {
    signal.removeEventListener("abort", onAbort);
    ac.abort();
    remote.release(failed);
  }
}
