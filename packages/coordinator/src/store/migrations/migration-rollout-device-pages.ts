import type { Kysely, Migration } from "kysely";

/**
 * Migration 0020_rollout_device_pages: the index that pages a rollout's devices in their order
 * (wave, plan position, device id) from a key, so GetRollout reads one page of a rollout of any
 * size instead of every device (see store/rollouts/rollout-store.ts `listRolloutDevices`).
 */
export const rolloutDevicePagesMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.createIndex("rollout_devices_page").on("rollout_devices").columns(["rollout_id", "wave", "position", "device_id"]).execute();
  },
};
