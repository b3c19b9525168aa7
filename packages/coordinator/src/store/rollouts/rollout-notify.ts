import type { Transaction } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import { putDesiredRelease } from "../releases/desired-release.ts";
import type { RolloutRow } from "./rollout-rows.ts";
import type { Database } from "../schema/schema.ts";
import { num } from "../columns.ts";

/**
 * Sets the rollout's release as the device's desired one and records the notification (and what
 * the device ran before) on the rollout's device row, in the caller's transaction. A device that
 * runs the release already becomes healthy; one no longer approved, skipped. True when the
 * device's desired state changed (its Watch stream must be woken after commit).
 */
export async function notifyDevice(trx: Transaction<Database>, adapter: StoreAdapter, r: RolloutRow, deviceId: string, now: number): Promise<boolean> {
  const current = await trx
    .selectFrom("device_releases")
    .select(["current_version", "current_counter"])
    .where("org_id", "=", r.orgId)
    .where("device_id", "=", deviceId)
    .where("name", "=", r.releaseName)
    .executeTakeFirst();
  const runsIt = current !== undefined && num(current.current_counter) === r.releaseCounter;
  const wrote = runsIt ? false : await writeDesiredRelease(trx, adapter, r.orgId, deviceId, r.releaseName, r.releaseCounter, now);
  await trx
    .updateTable("rollout_devices")
    .set({
      state: runsIt ? "healthy" : wrote ? "notified" : "skipped",
      error: runsIt ? "already running this release" : wrote ? "" : "device no longer approved, or release gone",
      previous_version: current?.current_version ?? "",
      previous_counter: current ? num(current.current_counter) : 0,
      notified_at: now,
      updated_at: now,
    })
    .where("rollout_id", "=", r.id)
    .where("device_id", "=", deviceId)
    .execute();
  return wrote;
}

/**
 * The device's desired release for `name` becomes (name, counter), in the caller's transaction.
 * False (nothing written) when the release or the device is gone or the device is not approved.
 */
export async function writeDesiredRelease(trx: Transaction<Database>, adapter: StoreAdapter, orgId: string, deviceId: string, name: string, counter: number, now: number): Promise<boolean> {
  const release = await trx.selectFrom("releases").selectAll().where("org_id", "=", orgId).where("name", "=", name).where("counter", "=", counter).executeTakeFirst();
  if (!release) return false;
  return putDesiredRelease(trx, adapter, orgId, deviceId, { name, targetPath: release.target_path, counter: num(release.counter), version: release.version, kind: release.kind }, now);
}
