import type { Kysely, Migration } from "kysely";

/**
 * Migration 0016_device_move: the last move of each device between organizations, with the
 * endorsement signed by the old organization's root keys that its agent checks before it trusts
 * the new organization's root (docs/device-move.md).
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
  },
};
