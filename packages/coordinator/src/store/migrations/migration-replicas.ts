import type { Kysely, Migration } from "kysely";

/**
 * Replicas sharing one database: `leases` lets one replica at a time run a piece of background
 * work (server/lease.ts); `replicas` lists the live ones and the internal address each answers
 * on (tunnels forwarded between replicas); `replica_identity` records the coordinator key every
 * replica must serve (identity/shared-identity.ts).
 */
export const replicasMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable("leases")
      .addColumn("name", "text", (c) => c.primaryKey())
      .addColumn("holder", "text", (c) => c.notNull())
      .addColumn("expires_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("replicas")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("address", "text", (c) => c.notNull())
      .addColumn("started_at", "bigint", (c) => c.notNull())
      .addColumn("seen_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema
      .createTable("replica_identity")
      .addColumn("singleton", "integer", (c) => c.primaryKey())
      .addColumn("key_id", "text", (c) => c.notNull())
      .addColumn("updated_at", "bigint", (c) => c.notNull())
      .execute();
  },
};
