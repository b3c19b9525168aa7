import { EventEmitter } from "node:events";
import type { Logger } from "@flotilla/protocol";
import type { LogLineRow, ReplicaEvents, TelemetryStore } from "../store/index.ts";

/** A stored line with the name of its device, as followers receive it. */
export type FedLine = LogLineRow & { deviceName: string };

/** The topic of "lines were stored" events among replicas. */
const TOPIC = "logs";
/** Most lines one catch-up read brings; a follower that far behind sees the newest on its next read. */
const READ_LIMIT = 5000;
/** Streams whose last seq is remembered before the memory is cleared (and catch-up starts over). */
const MAX_TRACKED = 100_000;

/** What one replica tells the others when it stored lines: where to read them, never the lines. */
interface StoredEvent {
  /** The replica that stored them. */
  r: string;
  o: string;
  d: string;
  /** The device's name, for followers. */
  n: string;
  s: string;
  from: number;
  to: number;
}

export interface RemoteLogs {
  events: ReplicaEvents;
  telemetry: Pick<TelemetryStore, "queryLogs">;
  replicaId: string;
  log: Logger;
}

/**
 * Newly stored log lines, for FollowLogs streams. Lines stored here reach this replica's
 * followers at once. With `remote` (replicas sharing PostgreSQL), every replica also announces
 * what it stored (device, stream, seq range) as a replica event, and each of the others reads
 * those lines from the database for its own followers, when it has any for that organization.
 * A read starts after the last line this replica handed on for the stream, so an announcement
 * missed (the listening connection dropped) is caught up by the stream's next one, and when the
 * connection comes back every stream it knows is read up to date.
 */
export class LogFeed {
  private readonly events = new EventEmitter();
  /** The last seq handed on, by org/device/stream. */
  private readonly lastSeq = new Map<string, { seq: number; name: string }>();
  private reads: Promise<void> = Promise.resolve();
  private readonly offs: (() => void)[] = [];

  constructor(private readonly remote?: RemoteLogs) {
    this.events.setMaxListeners(0);
    if (remote) {
      this.offs.push(remote.events.subscribe(TOPIC, (p) => this.announced(p)));
      this.offs.push(remote.events.onResync(() => this.resync()));
    }
  }

  /**
   * Whether lines of the organization are wanted: it has followers here, or other replicas may
   * (their announcements, and this replica's record of what it handed on, need every batch).
   */
  wants(orgId: string): boolean {
    return this.remote !== undefined || this.events.listenerCount(orgId) > 0;
  }

  publish(orgId: string, lines: FedLine[]): void {
    if (lines.length === 0) return;
    this.note(lines);
    this.events.emit(orgId, lines);
    if (!this.remote) return;
    const ranges = new Map<string, StoredEvent>();
    for (const l of lines) {
      const k = `${l.deviceId}/${l.stream}`;
      const e = ranges.get(k);
      if (e) {
        e.from = Math.min(e.from, l.seq);
        e.to = Math.max(e.to, l.seq);
      } else ranges.set(k, { r: this.remote.replicaId, o: orgId, d: l.deviceId, n: l.deviceName, s: l.stream, from: l.seq, to: l.seq });
    }
    for (const e of ranges.values()) {
      this.remote.events.publish(TOPIC, JSON.stringify(e)).catch((err: unknown) => this.remote?.log.warn("could not announce stored log lines to other replicas", { err: String(err) }));
    }
  }

  /** Calls `fn` with each batch of new lines of the organization; returns the unsubscribe function. */
  subscribe(orgId: string, fn: (lines: FedLine[]) => void): () => void {
    this.events.on(orgId, fn);
    return () => void this.events.off(orgId, fn);
  }

  /** Stops listening to other replicas and waits for a read under way. */
  async close(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    await this.reads;
  }

  private note(lines: FedLine[]): void {
    if (this.lastSeq.size > MAX_TRACKED) this.lastSeq.clear();
    // A batch is one stream's lines: the highest seq of each run of one stream is noted.
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!;
      const next = lines[i + 1];
      if (next && next.orgId === l.orgId && next.deviceId === l.deviceId && next.stream === l.stream && next.seq > l.seq) continue;
      const k = `${l.orgId}/${l.deviceId}/${l.stream}`;
      if ((this.lastSeq.get(k)?.seq ?? 0) < l.seq) this.lastSeq.set(k, { seq: l.seq, name: l.deviceName });
    }
  }

  private announced(payload: string): void {
    let e: StoredEvent;
    try {
      e = JSON.parse(payload) as StoredEvent;
    } catch {
      return;
    }
    if (!this.remote || e.r === this.remote.replicaId || typeof e.o !== "string" || !Number.isSafeInteger(e.to)) return;
    if (this.events.listenerCount(e.o) === 0) return;
    this.read(e.o, e.d, e.s, e.n, e.from - 1, e.to);
  }

  /** Reads every stream this replica knows, for organizations with followers, up to date. */
  private resync(): void {
    for (const [k, v] of this.lastSeq) {
      const [orgId, deviceId, stream] = k.split("/") as [string, string, string];
      if (this.events.listenerCount(orgId) > 0) this.read(orgId, deviceId, stream, v.name, v.seq, Number.MAX_SAFE_INTEGER);
    }
  }

  /** Reads the stream's lines after the last handed on (or `from`) through `to`, one read at a time, in order. */
  private read(orgId: string, deviceId: string, stream: string, name: string, from: number, to: number): void {
    const remote = this.remote!;
    this.reads = this.reads.then(async () => {
      const after = this.lastSeq.get(`${orgId}/${deviceId}/${stream}`)?.seq ?? from;
      if (to <= after) return;
      try {
        const rows = await remote.telemetry.queryLogs(orgId, { deviceIds: [deviceId], after: { seq: after }, limit: Math.min(READ_LIMIT, to - after) });
        const lines = rows.filter((l) => l.stream === stream && l.seq <= to).map((l) => ({ ...l, deviceName: name }));
        if (lines.length === 0) return;
        this.note(lines);
        this.events.emit(orgId, lines);
      } catch (err) {
        remote.log.warn("could not read log lines another replica stored", { err: String(err) });
      }
    });
  }
}
