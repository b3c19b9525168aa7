import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type ServiceImpl } from "@connectrpc/connect";
import { coordinatorTransport, internalv1, keyPin, newId, uncompressedTunnels, type Identity, type Logger } from "@flotilla/protocol";
import type { ReplicaStore } from "../store/replicas/replica-store.ts";
import type { Frame } from "./frame-queue.ts";
import { PeerTransports } from "./peer-transports.ts";
import type { TunnelRegistry } from "./registry.ts";
import { REPLICA_AUTH_HEADER, replicaToken } from "./replica-auth.ts";
import { background, drainFrom, firstMessage, pumpInto } from "./relay.ts";

/** How often a replica refreshes its row in the registry of replicas. */
export const HEARTBEAT_MS = 5_000;
/** A replica not heard from for this long is not asked to carry tunnels. */
const LIVE_MS = 3 * HEARTBEAT_MS;
/** How long a replica waits for an answer to "who holds this device's Listen stream?" before asking again. */
const ASK_AGAIN_MS = 1_000;
/** How long the agent may take to answer a forwarded tunnel request. */
const ATTACH_MS = 20_000;

const LOCATE_TOPIC = "tunnel_locate";
const HOLDER_TOPIC = "tunnel_holder";

/** Where a device's Listen stream is: here, or on the replica with this id. */
export type ListenerPlace = { local: true } | { local: false; replicaId: string };

function toForwardResponse(f: Frame): internalv1.ForwardResponse {
  return create(
    internalv1.ForwardResponseSchema,
    f.kind === "data" ? { frame: { case: "data", value: f.data } } : { frame: { case: "eof", value: {} } },
  );
}

/**
 * Tunnels across replicas sharing one database. Each replica registers its internal address in
 * the `replicas` table (heartbeat every HEARTBEAT_MS). An admin's Open on a replica where the
 * device's agent does not listen asks every replica once over LISTEN/NOTIFY which holds that
 * agent's Listen stream (one event out, one back from the holder: O(1) per tunnel, nothing per
 * device), then carries the tunnel to the holder over ReplicaTunnelService.Forward, authenticated
 * with a short-lived token signed by the shared coordinator key, on one connection per holder
 * shared by all the tunnels carried there. The holder asks its agent as a local Open would.
 */
export class ReplicaTunnels {
  /** This replica's id in the registry and in tokens addressed to it. */
  readonly id = `rep_${newId(12)}`;
  private address: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly pending = new Map<string, (replicaId: string) => void>();
  private readonly unsubscribe: (() => void)[] = [];
  /** Connections to the other replicas, each shared by the tunnels carried there. */
  private readonly peers = new PeerTransports((url) =>
    coordinatorTransport({ url, pin: keyPin(this.identity.publicKey), interceptors: [uncompressedTunnels] }),
  );

  constructor(
    private readonly replicas: ReplicaStore,
    private readonly identity: Identity,
    private readonly tunnels: TunnelRegistry,
    private readonly log: Logger,
  ) {
    this.unsubscribe.push(
      replicas.events.subscribe(LOCATE_TOPIC, (payload) => this.onLocate(payload)),
      replicas.events.subscribe(HOLDER_TOPIC, (payload) => this.onHolder(payload)),
    );
  }

  /** Registers `address` (where the other replicas reach this one) and keeps it fresh. */
  async register(address: string): Promise<void> {
    this.address = address;
    await this.heartbeat();
    this.timer = setInterval(() => void this.heartbeat(), HEARTBEAT_MS);
    this.timer.unref();
  }

  private async heartbeat(): Promise<void> {
    if (!this.address) return;
    try {
      await this.replicas.heartbeatReplica({ id: this.id, address: this.address, now: Date.now() });
    } catch (err) {
      this.log.warn("could not refresh this replica in the registry", { error: String(err) });
    }
  }

  async close(): Promise<void> {
    for (const u of this.unsubscribe.splice(0)) u();
    clearInterval(this.timer);
    this.peers.close();
    if (this.address) await this.replicas.removeReplica(this.id).catch(() => {});
  }

  private onLocate(payload: string): void {
    const q = parse(payload);
    if (!q || typeof q.q !== "string" || typeof q.d !== "string" || q.from === this.id) return;
    if (!this.tunnels.isListening(q.d)) return;
    this.replicas.events.publish(HOLDER_TOPIC, JSON.stringify({ q: q.q, id: this.id })).catch((err: unknown) => {
      this.log.warn("could not answer a tunnel look-up", { error: String(err) });
    });
  }

  private onHolder(payload: string): void {
    const a = parse(payload);
    if (!a || typeof a.q !== "string" || typeof a.id !== "string") return;
    this.pending.get(a.q)?.(a.id);
  }

  /**
   * Where `deviceId`'s agent listens for tunnel requests: here, or on another replica; waits up
   * to `ms` for one (an agent that just reconnected opens Listen right after Watch).
   */
  async locate(deviceId: string, ms: number, signal: AbortSignal): Promise<ListenerPlace | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.tunnels.isListening(deviceId)) return { local: true };
      const left = deadline - Date.now();
      if (left <= 0 || signal.aborted) return undefined;
      const q = newId(12);
      const answered = new Promise<string>((resolve) => this.pending.set(q, resolve));
      try {
        await this.replicas.events.publish(LOCATE_TOPIC, JSON.stringify({ q, d: deviceId, from: this.id }));
        const place = await Promise.race([
          answered.then((replicaId): ListenerPlace => ({ local: false, replicaId })),
          this.tunnels.waitForListener(deviceId, Math.min(ASK_AGAIN_MS, left), signal).then((l) => (l ? ({ local: true } as const) : undefined)),
        ]);
        if (place) return place;
      } catch (err) {
        this.log.warn("could not look for the replica holding a device's agent", { error: String(err) });
        await this.tunnels.waitForListener(deviceId, Math.min(ASK_AGAIN_MS, left), signal);
      } finally {
        this.pending.delete(q);
      }
    }
  }

  /**
   * A client of replica `replicaId`'s ReplicaTunnelService and a token for it; undefined when it
   * is not live. The connection under it is shared with the other tunnels to that replica (see
   * PeerTransports): `release` it when the tunnel ended, with `failed` when the call broke.
   */
  async connect(replicaId: string): Promise<{ client: Client<typeof internalv1.ReplicaTunnelService>; headers: Record<string, string>; release(failed: boolean): void } | undefined> {
    const live = await this.replicas.liveReplicas(Date.now() - LIVE_MS);
    const target = live.find((r) => r.id === replicaId);
    if (!target) return undefined;
    const { transport, release } = await this.peers.acquire(target.id, target.address);
    return {
      client: createClient(internalv1.ReplicaTunnelService, transport),
      headers: { [REPLICA_AUTH_HEADER]: replicaToken(this.identity, replicaId) },
      release,
    };
  }
}

function parse(payload: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(payload);
    return v && typeof v === "object" ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The holder's side of a forwarded tunnel: asks the device's agent listening here, exactly as a
 * local Open would, and relays with the same bounded queues. The authorization interceptor has
 * checked the replica token (rule "replica"); the admin's replica checked the admin and audits.
 */
export function replicaTunnelService(tunnels: TunnelRegistry): ServiceImpl<typeof internalv1.ReplicaTunnelService> {
  return {
    async *forward(reqs, hctx) {
      const it = reqs[Symbol.asyncIterator]();
      const first = await firstMessage(it, ATTACH_MS, "forward target");
      if (first.frame.case !== "target") throw new ConnectError("the first message must name the target", Code.InvalidArgument);
      const { orgId, deviceId, port } = first.frame.value;
      if (!orgId || !deviceId || !Number.isInteger(port) || port < 1 || port > 65535) {
        throw new ConnectError("a forward target needs an organization, a device and a port from 1 to 65535", Code.InvalidArgument);
      }
      const tunnel = tunnels.open(orgId, deviceId, port);
      if (!tunnel) throw new ConnectError("the device's agent moved to another coordinator replica meanwhile; try again", Code.FailedPrecondition);
      let finished = false;
      const onAbort = () => tunnel.abort(new ConnectError("the admin's replica closed the tunnel", Code.Canceled));
      hctx.signal.addEventListener("abort", onAbort);
      try {
        const timer = setTimeout(() => tunnel.abort(new ConnectError("the device did not answer the tunnel request", Code.DeadlineExceeded)), ATTACH_MS);
        const answer = await tunnel.attached.finally(() => clearTimeout(timer));
        if (!answer.ok) throw answer.error;
        yield create(internalv1.ForwardResponseSchema, { frame: { case: "opened", value: { tunnelId: tunnel.id } } });
        const upstream = background(
          pumpInto(it, tunnel.up, (n) => (tunnel.bytesUp += n)),
          (err) => tunnel.abort(err),
        );
        yield* drainFrom(tunnel.down, toForwardResponse);
        await upstream;
        finished = true;
      } finally {
        hctx.signal.removeEventListener("abort", onAbort);
        if (!finished) tunnel.abort(new ConnectError("the admin's replica closed the tunnel", Code.Canceled));
        tunnels.release(tunnel);
      }
    },
  };
}
