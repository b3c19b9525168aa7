import type { Logger } from "@flotilla/protocol";
import type { Lifecycle, ReplicaEvents } from "../store/index.ts";

/** One device's status change; what did not change is left out. */
export interface StatusChange {
  orgId: string;
  id: string;
  name?: string;
  lifecycle?: Lifecycle;
  /** Whether a Watch stream is open (presence), with `at` the time it was last seen. */
  connected?: boolean;
  at?: number;
}

/** Changes a reader may have waiting before it is cut to "resync". */
export const MAX_QUEUED_CHANGES = 1000;

const TOPIC = "device-status";
/** Changes per announcement to other replicas: well under the 7000-byte NOTIFY payload. */
const CHUNK = 40;

/** One reader of an organization's changes: a bounded queue it drains at its own pace. */
export class StatusReader {
  queued: StatusChange[] = [];
  /** Changes were dropped (the queue was full, or another replica's announcements were lost). */
  resync = false;
  private wake: (() => void) | undefined;

  constructor(private readonly max: number) {}

  push(c: StatusChange): void {
    if (this.resync) return;
    if (this.queued.length >= this.max) {
      this.queued = [];
      this.resync = true;
    } else this.queued.push(c);
    this.notify();
  }

  lost(): void {
    this.queued = [];
    this.resync = true;
    this.notify();
  }

  notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Resolves when there is something to read, after `timeoutMs`, or when `signal` aborts. */
  wait(signal: AbortSignal, timeoutMs: number): Promise<void> {
    if (this.queued.length > 0 || this.resync || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
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
  }

  /** What is waiting, emptied. */
  take(): { changes: StatusChange[]; resync: boolean } {
    const r = { changes: this.queued, resync: this.resync };
    this.queued = [];
    this.resync = false;
    return r;
  }
}

/**
 * Device status changes (presence written by {@link Presence}, approvals and other lifecycle
 * changes) handed to the WatchDevices readers of the device's organization. Publishing costs one
 * push per reader of that organization, whatever the size of the fleet; a reader that falls
 * behind loses its queue and is told to resync, so it never holds the others back.
 *
 * With PostgreSQL and several replicas, changes are also announced to the other replicas
 * (LISTEN/NOTIFY, a few changes per notification); a replica whose listening connection dropped
 * tells its readers to resync.
 */
export class DeviceStatusFeed {
  private readonly readers = new Map<string, Set<StatusReader>>();
  private readonly offs: (() => void)[] = [];
  closed = false;

  constructor(private readonly remote?: { events: ReplicaEvents; replicaId: string; log: Logger }) {
    if (remote) {
      this.offs.push(remote.events.subscribe(TOPIC, (p) => this.announced(p)));
      this.offs.push(
        remote.events.onResync(() => {
          for (const set of this.readers.values()) for (const r of set) r.lost();
        }),
      );
    }
  }

  subscribe(orgId: string, max = MAX_QUEUED_CHANGES): { reader: StatusReader; close: () => void } {
    const reader = new StatusReader(max);
    let set = this.readers.get(orgId);
    if (!set) this.readers.set(orgId, (set = new Set()));
    set.add(reader);
    return {
      reader,
      close: () => {
        set.delete(reader);
        if (set.size === 0 && this.readers.get(orgId) === set) this.readers.delete(orgId);
      },
    };
  }

  /** Hands the changes to this replica's readers and announces them to the others. */
  publish(changes: readonly StatusChange[]): void {
    this.deliver(changes);
    const remote = this.remote;
    if (!remote || changes.length === 0) return;
    for (let i = 0; i < changes.length; i += CHUNK) {
      const payload = JSON.stringify({ r: remote.replicaId, c: changes.slice(i, i + CHUNK) });
      remote.events.publish(TOPIC, payload).catch((err: unknown) => remote.log.warn("could not announce device status to other replicas", { err: String(err) }));
    }
  }

  private deliver(changes: readonly StatusChange[]): void {
    for (const c of changes) {
      const set = this.readers.get(c.orgId);
      if (set) for (const r of set) r.push(c);
    }
  }

  /** An announcement from a replica: validated, since it came over the network. */
  private announced(payload: string): void {
    let v: unknown;
    try {
      v = JSON.parse(payload);
    } catch {
      return;
    }
    if (typeof v !== "object" || v === null) return;
    const { r, c } = v as { r?: unknown; c?: unknown };
    if (r === this.remote?.replicaId || !Array.isArray(c)) return;
    const ok: StatusChange[] = [];
    for (const x of c as unknown[]) {
      if (typeof x !== "object" || x === null) continue;
      const o = x as Record<string, unknown>;
      if (typeof o.orgId !== "string" || typeof o.id !== "string") continue;
      ok.push({
        orgId: o.orgId,
        id: o.id,
        name: typeof o.name === "string" ? o.name : undefined,
        lifecycle: o.lifecycle === "pending" || o.lifecycle === "approved" || o.lifecycle === "rejected" || o.lifecycle === "decommissioned" ? o.lifecycle : undefined,
        connected: typeof o.connected === "boolean" ? o.connected : undefined,
        at: typeof o.at === "number" ? o.at : undefined,
      });
    }
    this.deliver(ok);
  }

  close(): void {
    this.closed = true;
    for (const off of this.offs) off();
    for (const set of this.readers.values()) for (const r of set) r.notify();
  }
}
