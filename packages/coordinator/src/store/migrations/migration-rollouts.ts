import type { Kysely, Migration } from "kysely";

/** Rollouts, their devices, and the claims that keep two rollouts off one device. */
export const rolloutsMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("rollouts")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("release_name", "text", (c) => c.notNull())
      .addColumn("release_version", "text", (c) => c.notNull())
      .addColumn("release_counter", "bigint", (c) => c.notNull())
      .addColumn("spec", "text", (c) => c.notNull())
      .addColumn("waves", "text", (c) => c.notNull())
      .addColumn("ineligible", "text", (c) => c.notNull())
      .addColumn("status", "text", (c) => c.notNull())
      .addColumn("reason", "text", (c) => c.notNull())
      .addColumn("current_wave", "integer", (c) => c.notNull())
      .addColumn("wave_finished_at", "bigint")
      .addColumn("approved_wave", "integer", (c) => c.notNull())
      .addColumn("tolerated_failures", "integer", (c) => c.notNull())
      .addColumn("deadline_at", "bigint")
      .addColumn("created_by", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("updated_at", "bigint", (c) => c.notNull())
      .addColumn("version", "bigint", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("rollouts_org").on("rollouts").columns(["org_id", "created_at"]).execute();
    await db.schema.createIndex("rollouts_status").on("rollouts").column("status").execute();

    await db.schema
      .createTable("rollout_devices")
      .addColumn("rollout_id", "text", (c) => c.notNull())
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("device_id", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("wave", "integer", (c) => c.notNull())
      .addColumn("position", "integer", (c) => c.notNull())
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("bytes_done", "bigint", (c) => c.notNull())
      .addColumn("bytes_total", "bigint", (c) => c.notNull())
      .addColumn("error", "text", (c) => c.notNull())
      .addColumn("previous_version", "text", (c) => c.notNull())
      .addColumn("previous_counter", "bigint", (c) => c.notNull())
      .addColumn("notified_at", "bigint")
      .addColumn("updated_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("rollout_devices_pk", ["rollout_id", "device_id"])
      .execute();

    await db.schema
      .createTable("rollout_claims")
      .addColumn("device_id", "text", (c) => c.primaryKey())
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("rollout_id", "text", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("rollout_claims_rollout").on("rollout_claims").column("rollout_id").execute();
  },
};
