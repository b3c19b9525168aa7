import { sql, type Kysely, type Migration } from "kysely";

/**
 * Migration 0012_storage_quotas: per-organization storage accounting. `storage_charges` lists
 * what each organization is charged for (an artifact or NAR it uploaded, once however often it
 * uploads it), `storage_reservations` the room its unfinished uploads hold, and `storage_usage`
 * one counter row per organization with both sums, so checking a quota reads one row.
 *
 * Organizations are charged for what they stored before: the artifacts they own, and the NARs
 * their cache names in a narinfo (a NAR uploaded without one has no recorded size and is not
 * counted).
 */
export const storageQuotasMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable("storage_usage")
      .addColumn("org_id", "text", (c) => c.primaryKey())
      .addColumn("used_bytes", "bigint", (c) => c.notNull())
      .addColumn("reserved_bytes", "bigint", (c) => c.notNull())
      .execute();

    await db.schema
      .createTable("storage_charges")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("kind", "text", (c) => c.notNull())
      .addColumn("object_key", "text", (c) => c.notNull())
      .addColumn("bytes", "bigint", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("storage_charges_pk", ["org_id", "kind", "object_key"])
      .execute();

    await db.schema
      .createTable("storage_reservations")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("upload_key", "text", (c) => c.notNull())
      .addColumn("bytes", "bigint", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("touched_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("storage_reservations_pk", ["org_id", "upload_key"])
      .execute();
    await db.schema.createIndex("storage_reservations_touched").on("storage_reservations").column("touched_at").execute();

    await db
      .insertInto("storage_charges")
      .columns(["org_id", "kind", "object_key", "bytes", "created_at"])
      .expression(db.selectFrom("artifact_owners").select(["org_id", sql<string>`'artifact'`.as("kind"), "sha256", "length", "created_at"]))
      .execute();
    await db
      .insertInto("storage_charges")
      .columns(["org_id", "kind", "object_key", "bytes", "created_at"])
      .expression(
        db
          .selectFrom("nix_paths")
          .select(["org_id", sql<string>`'nar'`.as("kind"), "file_hash", (eb) => eb.fn.max("file_size").as("bytes"), (eb) => eb.fn.min("created_at").as("created_at")])
          .groupBy(["org_id", "file_hash"]),
      )
      .execute();
    await db
      .insertInto("storage_usage")
      .columns(["org_id", "used_bytes", "reserved_bytes"])
      .expression(
        db
          .selectFrom("storage_charges")
          .select(["org_id", (eb) => eb.fn.sum("bytes").as("used_bytes"), sql<number>`0`.as("reserved_bytes")])
          .groupBy("org_id"),
      )
      .execute();
  },
};
