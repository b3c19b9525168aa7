import type { Kysely, Migration } from "kysely";

/**
 * 0015_device_presence: what connecting a large fleet needs indexed.
 *
 * - `sessions(expires_at)`: every new session (each agent's Authenticate) sweeps expired ones;
 *   without the index that sweep read the whole table, one row per device, so connecting N
 *   devices cost O(N²).
 */
export const devicePresenceMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.createIndex("sessions_expires").on("sessions").column("expires_at").execute();
  },
};
