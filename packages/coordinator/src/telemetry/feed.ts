import { EventEmitter } from "node:events";
import type { LogLineRow } from "../store/index.ts";

/** A stored line with the name of its device, as followers receive it. */
export type FedLine = LogLineRow & { deviceName: string };

/**
 * Newly stored log lines, for FollowLogs streams on this coordinator. Lines stored through
 * another replica sharing the database do not reach this feed: follow on the replica the device
 * is connected to (a limitation to lift with LISTEN/NOTIFY when replicas arrive).
 */
export class LogFeed {
  private readonly events = new EventEmitter();

  constructor() {
    this.events.setMaxListeners(0);
  }

  publish(orgId: string, lines: FedLine[]): void {
    if (lines.length > 0) this.events.emit(orgId, lines);
  }

  /** Calls `fn` with each batch of new lines of the organization; returns the unsubscribe function. */
  subscribe(orgId: string, fn: (lines: FedLine[]) => void): () => void {
    this.events.on(orgId, fn);
    return () => void this.events.off(orgId, fn);
  }
}
