import type { Kysely, Migration } from "kysely";

/**
 * Migration 0021_device_summary: indexes the overview's counts read by key rather than by a scan
 * of every rollout's devices: a rollout's failed and rolled-back devices by state, and a device's
 * rollouts by device (which of them is its latest). See store/devices/device-summary.ts.
 */
export const deviceSummaryMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.createIndex("rollout_devices_org_state").on("rollout_devices").columns(["org_id", "state"]).execute();
    await db.schema.createIndex("rollout_devices_device").on("rollout_devices").columns(["device_id"]).execute();
  },
};
