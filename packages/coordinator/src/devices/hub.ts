import { setImmediate as nextTurn } from "node:timers/promises";
import type { DeviceReleaseRow, DeviceRow, Store } from "../store/index.ts";

/** A device's desired state as read for its Watch stream: its row and its release rows. */
export interface DesiredSnapshot {
  device: DeviceRow;
  releases: DeviceReleaseRow[];
}

/** Woken devices read per batch: two statements each, well under the bound-parameter limits. */
const READ_BATCH = 400;

/**
 * Wakes the Watch streams of devices whose desired state changed. Level-triggered: a wake-up
 * says "look again", so a notification that arrives while nobody waits is never lost, only
 * folded into the next look.
 *
 * Fan-out reads in batches, not per stream: the devices woken (in this process, or by another
 * replica through LISTEN/NOTIFY) are collected until the next turn of the event loop, then the
 * desired state of those with a stream open here is read in two statements per
 * {@link READ_BATCH} devices (their rows, then their release rows), and each stream is handed its
 * snapshot. A change to 10,000 connected devices costs 50 reads instead of 20,000. Reads run one
 * batch at a time: devices woken during a read wait for the next one, which starts after that
 * read, so the last snapshot a stream is handed is never older than the last change it was woken
 * for. A stream handed no snapshot (the read failed) reads its device itself.
 */
export class Hub {
  private readonly waiters = new Map<string, Set<Subscription>>();
  private readonly connections = new Map<string, number>();
  private readonly unlisten: () => void;
  private pending = new Set<string>();
  private scheduled = false;
  private reading = false;
  private closed = false;

  constructor(private readonly store: Store) {
    this.unlisten = store.devices.onDeviceChange((_orgId, deviceId) => this.wake(deviceId));
  }

  /** Subscribe before reading state, so no change between the read and the wait is missed. */
  subscribe(deviceId: string): Subscription {
    const sub = new Subscription(() => {
      const set = this.waiters.get(deviceId);
      set?.delete(sub);
      if (set?.size === 0) this.waiters.delete(deviceId);
    });
    let set = this.waiters.get(deviceId);
    if (!set) this.waiters.set(deviceId, (set = new Set()));
    set.add(sub);
    return sub;
  }

  /** The device's desired state changed: its streams here are handed the new state soon. */
  wake(deviceId: string): void {
    if (this.closed || !this.waiters.has(deviceId)) return;
    this.pending.add(deviceId);
    this.schedule();
  }

  /** Counts open Watch streams per device; returns the count after the change. */
  connectionDelta(deviceId: string, delta: 1 | -1): number {
    const n = (this.connections.get(deviceId) ?? 0) + delta;
    if (n <= 0) this.connections.delete(deviceId);
    else this.connections.set(deviceId, n);
    return Math.max(n, 0);
  }

  close(): void {
    this.closed = true;
    this.unlisten();
    for (const set of this.waiters.values()) for (const sub of set) sub.notify();
  }

  private schedule(): void {
    if (this.scheduled || this.reading) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.reading = true;
      void this.readPending().finally(() => {
        this.reading = false;
        if (this.pending.size > 0) this.schedule();
      });
    });
  }

  private async readPending(): Promise<void> {
    const ids = [...this.pending];
    this.pending = new Set();
    for (let i = 0; i < ids.length; i += READ_BATCH) {
      // Streams that closed since they were woken are not read for.
      const batch = ids.slice(i, i + READ_BATCH).filter((id) => this.waiters.has(id));
      if (batch.length === 0) continue;
      let snapshots: Map<string, DesiredSnapshot> | undefined;
      try {
        snapshots = await this.read(batch);
      } catch {
        // Each stream reads its own device instead (and logs what fails there).
      }
      for (const id of batch) {
        const snapshot = snapshots?.get(id);
        for (const sub of this.waiters.get(id) ?? []) sub.notify(snapshot);
      }
      // SQLite answers synchronously, so without this the whole fan-out (every stream's write
      // included) runs as one chain of microtasks: at 10,000 devices, seconds in which the
      // coordinator reads no socket and answers no HTTP/2 ping. A turn of the event loop per
      // batch lets other calls and pings through.
      await nextTurn();
    }
  }

  private async read(ids: string[]): Promise<Map<string, DesiredSnapshot>> {
    const devices = await this.store.devices.getDevicesByIds(ids);
    const out = new Map<string, DesiredSnapshot>(devices.map((device) => [device.id, { device, releases: [] }]));
    for (const r of await this.store.releases.listDeviceReleasesOf(ids)) {
      const s = out.get(r.deviceId);
      if (s && s.device.orgId === r.orgId) s.releases.push(r);
    }
    return out;
  }
}

export class Subscription {
  private dirty = false;
  private snapshot: DesiredSnapshot | undefined;
  private resolve: (() => void) | undefined;

  constructor(private readonly onClose: () => void) {}

  /**
   * Something changed; `snapshot`, when given, is the device's desired state read after that
   * change. Without one the stream must read the device itself.
   */
  notify(snapshot?: DesiredSnapshot): void {
    this.dirty = true;
    this.snapshot = snapshot;
    this.resolve?.();
  }

  /** The snapshot handed with the last notification, once; undefined: read the device. */
  take(): DesiredSnapshot | undefined {
    const s = this.snapshot;
    this.snapshot = undefined;
    return s;
  }

  /** Resolves "changed" after a notification (including one that came before the call). */
  wait(signal: AbortSignal, timeoutMs: number): Promise<"changed" | "timeout" | "aborted"> {
    if (this.dirty) {
      this.dirty = false;
      return Promise.resolve("changed");
    }
    return new Promise((done) => {
      const finish = (r: "changed" | "timeout" | "aborted") => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.resolve = undefined;
        if (r === "changed") this.dirty = false;
        done(r);
      };
      const onAbort = () => finish("aborted");
      const timer = setTimeout(() => finish("timeout"), timeoutMs);
      this.resolve = () => finish("changed");
      if (signal.aborted) finish("aborted");
      else signal.addEventListener("abort", onAbort);
    });
  }

  close(): void {
    this.onClose();
  }
}
