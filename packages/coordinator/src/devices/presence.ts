import type { Logger } from "@flotilla/protocol";
import type { DeviceRow, Store } from "../store/index.ts";

/** How often remembered presence is written, by default. */
export const PRESENCE_FLUSH_MS = 1000;

interface Mark {
  orgId: string;
  connected: boolean;
  at: number;
  /** Connected since the last write: the rollout engine hears of it once the row says so. */
  arrived: boolean;
}

export interface PresenceOptions {
  /** How often to write; {@link PRESENCE_FLUSH_MS} by default. */
  flushMs?: number;
  /** Called for each device that connected, once its row says it is connected. */
  onConnected?: (orgId: string, deviceId: string) => void;
  /**
   * Called after each write with the devices that connected or disconnected in it (not those
   * that were only seen again): what the WatchDevices streams hear of presence.
   */
  onChanged?: (changes: { orgId: string; id: string; connected: boolean; at: number }[]) => void;
  log: Logger;
}

/**
 * Which devices have a Watch stream open on this coordinator, and when each was last heard from.
 * Connects, keep-alives and disconnects are remembered in memory and written together, once per
 * `flushMs`, in one transaction of a few statements (`recordPresence`), so the idle cost of a
 * fleet is one small transaction per second rather than a write per device per keep-alive.
 *
 * What it costs: `devices.connected` and `last_seen_at` in the table lag by up to `flushMs`
 * (readers in this process see the remembered values through {@link overlay}; the rollout engine
 * reads the table and hears of a connect only after it is written). A crash loses at most the
 * last `flushMs` of last-seen times; the rows of devices connected then keep `connected`, as
 * they did before, and count as offline once `last_seen_at` is older than the offline timeout.
 * On close every device connected here is written as disconnected.
 */
export class Presence {
  private readonly streams = new Map<string, { orgId: string; open: number }>();
  private pending = new Map<string, Mark>();
  private writing = new Map<string, Mark>();
  private flushing: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly opts: PresenceOptions,
  ) {
    this.timer = setInterval(() => {
      this.flush().catch((err: unknown) => opts.log.warn("device presence flush failed", { err: String(err) }));
    }, opts.flushMs ?? PRESENCE_FLUSH_MS);
    this.timer.unref();
  }

  /** A Watch stream of the device opened here. */
  connect(orgId: string, deviceId: string): void {
    if (this.closed) return;
    const s = this.streams.get(deviceId);
    if (s) s.open++;
    else this.streams.set(deviceId, { orgId, open: 1 });
    this.mark(orgId, deviceId, true, true);
  }

  /** The device is still there (a keep-alive went out on its stream). */
  seen(orgId: string, deviceId: string): void {
    if (this.closed || !this.streams.has(deviceId)) return;
    this.mark(orgId, deviceId, true, false);
  }

  /** A Watch stream of the device closed; the last one here marks it disconnected. */
  disconnect(orgId: string, deviceId: string): void {
    const s = this.streams.get(deviceId);
    if (!s || --s.open > 0) return;
    this.streams.delete(deviceId);
    if (!this.closed) this.mark(orgId, deviceId, false, false);
  }

  /** The row with the presence this coordinator knows and has not written yet. */
  overlay(row: DeviceRow): DeviceRow {
    const m = this.pending.get(row.id) ?? this.writing.get(row.id);
    return m ? { ...row, connected: m.connected, lastSeenAt: m.at } : row;
  }

  private mark(orgId: string, deviceId: string, connected: boolean, arrived: boolean): void {
    const before = this.pending.get(deviceId);
    this.pending.set(deviceId, { orgId, connected, at: Date.now(), arrived: connected && (arrived || (before?.arrived ?? false)) });
  }

  /** Writes what is remembered, in one transaction; waits for a write under way first. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.pending.size === 0) return;
    this.flushing = this.write().finally(() => (this.flushing = undefined));
    await this.flushing;
  }

  private async write(): Promise<void> {
    this.writing = this.pending;
    this.pending = new Map();
    const up: string[] = [];
    const down: string[] = [];
    for (const [id, m] of this.writing) (m.connected ? up : down).push(id);
    try {
      await this.store.devices.recordPresence(up, down, Date.now());
    } catch (err) {
      // Kept for the next write, unless the device has news since.
      for (const [id, m] of this.writing) if (!this.pending.has(id)) this.pending.set(id, m);
      this.writing = new Map();
      this.opts.log.warn("could not record device presence", { devices: up.length + down.length, err: String(err) });
      return;
    }
    const written = this.writing;
    this.writing = new Map();
    for (const [id, m] of written) if (m.arrived) this.opts.onConnected?.(m.orgId, id);
    if (this.opts.onChanged) {
      const changed = [];
      for (const [id, m] of written) if (m.arrived || !m.connected) changed.push({ orgId: m.orgId, id, connected: m.connected, at: m.at });
      if (changed.length > 0) this.opts.onChanged(changed);
    }
  }

  /** Stops the timer and writes every device connected here as disconnected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const [id, s] of this.streams) this.mark(s.orgId, id, false, false);
    this.streams.clear();
    await this.flush();
  }
}
