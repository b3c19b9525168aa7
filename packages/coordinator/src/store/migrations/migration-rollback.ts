import type { Kysely, Migration } from "kysely";

/**
 * The counter of the release a device is returned with after `rollout abort --roll-back` (0: it
 * is not being returned), so the device's report of that release can end its roll-back.
 */
export const rollbackMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable("rollout_devices").addColumn("rollback_counter", "bigint", (c) => c.notNull().defaultTo(0)).execute();
  },
};
