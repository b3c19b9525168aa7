import type { Kysely, Migration } from "kysely";

/**
 * Migration 0015_device_move: the last move of each device between organizations, with the
 * endorsement signed by the old organization's root keys that its agent checks before it trusts
 * the new organization's root (docs/device-move.md). Also an index on devices by organization
 * and name: `device ls` pages through an organization's devices in name order.
 */
export const deviceMoveMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("device_moves")
      .addColumn("device_id", "text", (c) => c.primaryKey())
      .addColumn("from_org", "text", (c) => c.notNull())
      .addColumn("to_org", "text", (c) => c.notNull())
      .addColumn("endorsement", "text", (c) => c.notNull())
      .addColumn("moved_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("devices_org_name").on("devices").columns(["org_id", "name", "id"]).execute();
  },
};
