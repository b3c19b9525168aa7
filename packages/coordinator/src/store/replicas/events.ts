import { EventEmitter } from "node:events";

/** The longest payload an event carries: PostgreSQL's NOTIFY takes under 8000 bytes with the topic. */
export const MAX_EVENT_PAYLOAD = 7000;

/**
 * Small messages to every replica sharing the database, this one included: PostgreSQL's
 * LISTEN/NOTIFY, or within the process on SQLite. Delivery is at most once: a replica whose
 * listening connection dropped misses what was sent meanwhile, and hears `onResync` when it is
 * back, so it can read what it missed from the database. Payloads name what changed; the
 * data itself stays in the database.
 */
export interface ReplicaEvents {
  /** Sends `payload` on `topic`; throws for a payload over MAX_EVENT_PAYLOAD bytes. */
  publish(topic: string, payload: string): Promise<void>;
  /** Calls `fn` with each payload sent on `topic`; returns the unsubscribe function. */
  subscribe(topic: string, fn: (payload: string) => void): () => void;
  /** Calls `fn` each time the listening connection came back after a loss. */
  onResync(fn: () => void): () => void;
}

/** Events among the listeners of one emitter: what a process alone on its database needs. */
export class LocalEvents implements ReplicaEvents {
  readonly emitter = new EventEmitter();

  constructor(private readonly send?: (topic: string, payload: string) => Promise<void>) {
    this.emitter.setMaxListeners(0);
  }

  async publish(topic: string, payload: string): Promise<void> {
    if (Buffer.byteLength(payload) > MAX_EVENT_PAYLOAD) throw new Error(`event payload over ${MAX_EVENT_PAYLOAD} bytes`);
    if (this.send) await this.send(topic, payload);
    else this.deliver(topic, payload);
  }

  /** Hands a payload to the topic's listeners (a notification that arrived). */
  deliver(topic: string, payload: string): void {
    this.emitter.emit(`topic:${topic}`, payload);
  }

  resynced(): void {
    this.emitter.emit("resync");
  }

  subscribe(topic: string, fn: (payload: string) => void): () => void {
    this.emitter.on(`topic:${topic}`, fn);
    return () => void this.emitter.off(`topic:${topic}`, fn);
  }

  onResync(fn: () => void): () => void {
    this.emitter.on("resync", fn);
    return () => void this.emitter.off("resync", fn);
  }
}
