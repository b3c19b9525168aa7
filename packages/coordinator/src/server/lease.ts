/**
 * Background work once across replicas. Replicas sharing a PostgreSQL database each run the same
 * timers; a task guarded by a lease runs on the replica that holds the lease's row (taken with
 * an expiry in the `leases` table, store/replicas/) and is skipped on the others. The holder
 * renews the lease at each run, so it keeps the work while it lives; when it stops (its lease
 * given back) or dies (its lease expires), the next replica whose timer fires takes it over.
 *
 * On SQLite there is one process per database, which holds every lease without asking.
 */
import { randomBytes } from "node:crypto";
import type { ReplicaStore } from "../store/index.ts";

export interface Leases {
  /** This replica's id: the holder name of its leases. */
  readonly replicaId: string;
  /**
   * Takes or renews lease `name` for `ttlMs` from now: true when this replica holds it, false
   * when another live holder does (the work is that one's to do). A database error is thrown.
   */
  hold(name: string, ttlMs: number): Promise<boolean>;
  /** Gives back every lease this replica holds, so another takes the work over at once. */
  close(): Promise<void>;
}

/** A new replica id, e.g. `r-3f9a1c20b4d7`: random per process start. */
export function newReplicaId(): string {
  return `r-${randomBytes(6).toString("hex")}`;
}

/** The leases of the only process on its database (SQLite): always held. */
export function soleLeases(replicaId = newReplicaId()): Leases {
  return { replicaId, hold: () => Promise.resolve(true), close: () => Promise.resolve() };
}

/** Leases in the shared database, held by `replicaId`. */
export class DatabaseLeases implements Leases {
  private readonly held = new Set<string>();

  constructor(
    private readonly store: ReplicaStore,
    readonly replicaId: string = newReplicaId(),
    private readonly now: () => number = Date.now,
  ) {}

  async hold(name: string, ttlMs: number): Promise<boolean> {
    const ok = await this.store.acquireLease(name, this.replicaId, this.now(), ttlMs);
    if (ok) this.held.add(name);
    else this.held.delete(name);
    return ok;
  }

  async close(): Promise<void> {
    const names = [...this.held];
    this.held.clear();
    await Promise.allSettled(names.map((n) => this.store.releaseLease(n, this.replicaId)));
  }
}

/**
 * The lease length for work repeated every `intervalMs`: two periods, and at least five seconds
 * more than one, so a timer that fires late or a slow database round trip does not let the
 * lease lapse between the holder's runs; a dead holder's work resumes within that.
 */
export function leaseTtlMs(intervalMs: number): number {
  return Math.max(2 * intervalMs, intervalMs + 5000);
}
