import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { agentv1, newId, TUNNEL_ATTACH_PATH } from "@flotilla/protocol";
import { FrameQueue } from "./frame-queue.ts";

/** Bytes one direction of one tunnel may hold in the coordinator (plus one frame of at most MAX_CHUNK_BYTES). */
export const QUEUE_LIMIT_BYTES = 256 * 1024;
/** Largest data frame accepted from either side. */
export const MAX_CHUNK_BYTES = 256 * 1024;

/** How an agent answered a tunnel request. */
export type AttachOutcome = { ok: true } | { ok: false; error: ConnectError };

/**
 * One tunnel in the coordinator: the admin's Open call and the agent's Attach call meet here.
 * `up` carries admin-to-device frames, `down` device-to-admin; `abort` ends both calls.
 */
export class Tunnel {
  readonly id = `tun_${newId(12)}`;
  readonly startedAt = Date.now();
  readonly up: FrameQueue;
  readonly down: FrameQueue;
  bytesUp = 0;
  bytesDown = 0;
  /** Set once an agent's Attach took this tunnel, so no second one can. */
  claimed = false;
  /** Calls (Open, then Attach) still using the tunnel; it is forgotten when none is left. */
  holders = 1;
  private readonly controller = new AbortController();
  private settle!: (o: AttachOutcome) => void;
  /** Resolves when the agent attaches or refuses. */
  readonly attached = new Promise<AttachOutcome>((resolve) => (this.settle = resolve));

  constructor(
    readonly orgId: string,
    readonly deviceId: string,
    readonly port: number,
    gauge: (delta: number) => void,
  ) {
    this.up = new FrameQueue(QUEUE_LIMIT_BYTES, this.controller.signal, gauge);
    this.down = new FrameQueue(QUEUE_LIMIT_BYTES, this.controller.signal, gauge);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  answer(outcome: AttachOutcome): void {
    this.settle(outcome);
  }

  /** Ends the tunnel for both sides; the first reason wins. */
  abort(reason: unknown): void {
    if (!this.controller.signal.aborted) this.controller.abort(ConnectError.from(reason));
    this.settle({ ok: false, error: ConnectError.from(reason) });
  }

  /** Frees what the tunnel still holds. */
  dispose(): void {
    this.up.drop();
    this.down.drop();
  }
}

/** A Listen stream of one agent: tunnel requests wait here until the stream sends them. */
export class TunnelListener {
  private readonly queue: agentv1.TunnelRequest[] = [];
  private wake: (() => void) | undefined;

  constructor(private readonly onClose: (l: TunnelListener) => void) {}

  offer(req: agentv1.TunnelRequest): void {
    this.queue.push(req);
    this.wake?.();
  }

  /** The next request, or undefined after `timeoutMs` or once `signal` aborts. */
  async next(signal: AbortSignal, timeoutMs: number): Promise<agentv1.TunnelRequest | undefined> {
    const queued = this.queue.shift();
    if (queued || signal.aborted) return queued;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener("abort", done);
      this.wake = done;
    });
    return this.queue.shift();
  }

  /** Requests this stream never sent go back to the registry to be failed. */
  close(): agentv1.TunnelRequest[] {
    this.onClose(this);
    return this.queue.splice(0);
  }
}

/**
 * The coordinator's tunnels: which agents listen for tunnel requests, and the tunnels waiting
 * for their agent or open. In memory: a tunnel to an agent connected to another replica is
 * carried there (replicas.ts) and lives in that replica's registry.
 */
export class TunnelRegistry {
  private readonly listeners = new Map<string, TunnelListener[]>();
  private readonly tunnels = new Map<string, Tunnel>();
  private held = 0;
  private listenWaiters: (() => void)[] = [];

  /** Bytes all tunnels hold in the coordinator right now: the flow-control bound made visible. */
  get heldBytes(): number {
    return this.held;
  }

  /** Tunnels waiting for their agent or open. */
  get size(): number {
    return this.tunnels.size;
  }

  listen(deviceId: string): TunnelListener {
    const listener = new TunnelListener((l) => {
      const list = (this.listeners.get(deviceId) ?? []).filter((x) => x !== l);
      if (list.length === 0) this.listeners.delete(deviceId);
      else this.listeners.set(deviceId, list);
    });
    this.listeners.set(deviceId, [...(this.listeners.get(deviceId) ?? []), listener]);
    for (const wake of this.listenWaiters.splice(0)) wake();
    return listener;
  }

  /**
   * Waits up to `ms` for a Listen stream of `deviceId` (an agent that just reconnected opens it
   * right after its Watch stream); true when one is there.
   */
  async waitForListener(deviceId: string, ms: number, signal: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.isListening(deviceId) && !signal.aborted && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, deadline - Date.now());
        signal.addEventListener("abort", done);
        this.listenWaiters.push(done);
      });
    }
    return this.isListening(deviceId);
  }

  isListening(deviceId: string): boolean {
    return (this.listeners.get(deviceId)?.length ?? 0) > 0;
  }

  /** Creates a tunnel and asks the device's newest Listen stream for it; undefined when none listens. */
  open(orgId: string, deviceId: string, port: number): Tunnel | undefined {
    const listener = this.listeners.get(deviceId)?.at(-1);
    if (!listener) return undefined;
    const tunnel = new Tunnel(orgId, deviceId, port, (d) => (this.held += d));
    this.tunnels.set(tunnel.id, tunnel);
    listener.offer(create(agentv1.TunnelRequestSchema, { tunnelId: tunnel.id, port, attachPath: TUNNEL_ATTACH_PATH }));
    return tunnel;
  }

  /** The tunnel `tunnelId` when it belongs to `deviceId` and no agent has answered it yet. */
  claim(deviceId: string, tunnelId: string): Tunnel | undefined {
    const t = this.tunnels.get(tunnelId);
    if (!t || t.deviceId !== deviceId || t.claimed || t.signal.aborted) return undefined;
    t.claimed = true;
    t.holders++;
    return t;
  }

  /**
   * One call is done with the tunnel; after the last, it is forgotten and its buffers freed.
   * A call that ends normally leaves the other to deliver what is still queued.
   */
  release(tunnel: Tunnel): void {
    if (--tunnel.holders > 0) return;
    this.tunnels.delete(tunnel.id);
    tunnel.dispose();
  }

  /** Fails requests a closing Listen stream never delivered. */
  failUndelivered(requests: agentv1.TunnelRequest[]): void {
    for (const r of requests) {
      this.tunnels.get(r.tunnelId)?.abort(new ConnectError("the device's agent disconnected", Code.Aborted));
    }
  }

  /** Ends every tunnel (coordinator shutdown). */
  close(): void {
    for (const t of this.tunnels.values()) t.abort(new ConnectError("the coordinator is shutting down", Code.Aborted));
  }
}
