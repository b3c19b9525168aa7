import type { Kysely } from "kysely";
import type { Database } from "../schema/schema.ts";
import type { ReplicaEvents } from "./events.ts";

/** A live replica and where the others reach it. */
export interface ReplicaRecord {
  id: string;
  /** Its internal address, e.g. http://10.0.0.5:7701. */
  address: string;
  startedAt: number;
  seenAt: number;
}

/**
 * What replicas sharing one database agree on through it: which of them runs a piece of
 * background work (leases), which of them are alive and where (the registry), and which
 * coordinator key they all serve.
 */
export interface ReplicaStore {
  /** Messages to every replica (LISTEN/NOTIFY on PostgreSQL). */
  readonly events: ReplicaEvents;

  /**
   * Takes or renews the lease `name` for `holder` until `now + ttlMs`: true when `holder` holds
   * it now (it was free, expired, or already its own), false when another holder's lease runs.
   */
  acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean>;
  /** Gives the lease up, when `holder` holds it. */
  releaseLease(name: string, holder: string): Promise<void>;
  /** Who holds `name` now, if anyone. */
  leaseHolder(name: string, now: number): Promise<string | undefined>;

  /** Adds or refreshes a replica in the registry. */
  heartbeatReplica(r: { id: string; address: string; now: number }): Promise<void>;
  /** The replicas heard from at or after `since`. */
  liveReplicas(since: number): Promise<ReplicaRecord[]>;
  removeReplica(id: string): Promise<void>;

  /**
   * Records `keyId` as the coordinator key of this database if none is recorded yet; returns
   * the recorded one (the first replica's, when several start at once).
   */
  recordIdentity(keyId: string, now: number): Promise<string>;
  /** Replaces the recorded key `from` with `to` (after a rotation); false when `from` was not it. */
  replaceIdentity(from: string, to: string, now: number): Promise<boolean>;
}

export class KyselyReplicaStore implements ReplicaStore {
  constructor(
    private readonly db: Kysely<Database>,
    readonly events: ReplicaEvents,
  ) {}

  async acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean> {
    const expiresAt = now + ttlMs;
    // One statement: insert, or take over an expired or own lease; a running one stays.
    await this.db
      .insertInto("leases")
      .values({ name, holder, expires_at: expiresAt })
      .onConflict((oc) =>
        oc
          .column("name")
          .doUpdateSet({ holder, expires_at: expiresAt })
          .where((eb) => eb.or([eb("leases.expires_at", "<=", now), eb("leases.holder", "=", holder)])),
      )
      .execute();
    const row = await this.db.selectFrom("leases").select(["holder", "expires_at"]).where("name", "=", name).executeTakeFirst();
    return row?.holder === holder && Number(row.expires_at) === expiresAt;
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    await this.db.deleteFrom("leases").where("name", "=", name).where("holder", "=", holder).execute();
  }

  async leaseHolder(name: string, now: number): Promise<string | undefined> {
    const row = await this.db.selectFrom("leases").select("holder").where("name", "=", name).where("expires_at", ">", now).executeTakeFirst();
    return row?.holder;
  }

  async heartbeatReplica(r: { id: string; address: string; now: number }): Promise<void> {
    await this.db
      .insertInto("replicas")
      .values({ id: r.id, address: r.address, started_at: r.now, seen_at: r.now })
      .onConflict((oc) => oc.column("id").doUpdateSet({ address: r.address, seen_at: r.now }))
      .execute();
  }

  async liveReplicas(since: number): Promise<ReplicaRecord[]> {
    const rows = await this.db.selectFrom("replicas").selectAll().where("seen_at", ">=", since).orderBy("id").execute();
    return rows.map((r) => ({ id: r.id, address: r.address, startedAt: Number(r.started_at), seenAt: Number(r.seen_at) }));
  }

  async removeReplica(id: string): Promise<void> {
    await this.db.deleteFrom("replicas").where("id", "=", id).execute();
  }

  async recordIdentity(keyId: string, now: number): Promise<string> {
    await this.db
      .insertInto("replica_identity")
      .values({ singleton: 1, key_id: keyId, updated_at: now })
      .onConflict((oc) => oc.column("singleton").doNothing())
      .execute();
    const row = await this.db.selectFrom("replica_identity").select("key_id").where("singleton", "=", 1).executeTakeFirstOrThrow();
    return row.key_id;
  }

  async replaceIdentity(from: string, to: string, now: number): Promise<boolean> {
    const r = await this.db
      .updateTable("replica_identity")
      .set({ key_id: to, updated_at: now })
      .where("singleton", "=", 1)
      .where("key_id", "=", from)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }
}
