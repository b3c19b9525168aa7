import type { Store } from "../store/index.ts";

/**
 * Wakes the Watch streams of devices whose desired state changed. Level-triggered: a wake-up
 * only says "look again"; the stream then reads the device's state from the store, so a
 * notification that arrives while nobody waits is never lost, only folded into the next read.
 */
export class Hub {
  private readonly waiters = new Map<string, Set<Subscription>>();
  private readonly connections = new Map<string, number>();
  private readonly unlisten: () => void;

  constructor(store: Store) {
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

  wake(deviceId: string): void {
    for (const sub of this.waiters.get(deviceId) ?? []) sub.notify();
  }

  /** Counts open Watch streams per device; returns the count after the change. */
  connectionDelta(deviceId: string, delta: 1 | -1): number {
    const n = (this.connections.get(deviceId) ?? 0) + delta;
    if (n <= 0) this.connections.delete(deviceId);
    else this.connections.set(deviceId, n);
    return Math.max(n, 0);
  }

  close(): void {
    this.unlisten();
    for (const set of this.waiters.values()) for (const sub of set) sub.notify();
  }
}

export class Subscription {
  private dirty = false;
  private resolve: (() => void) | undefined;

  constructor(private readonly onClose: () => void) {}

  notify(): void {
    this.dirty = true;
    this.resolve?.();
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
