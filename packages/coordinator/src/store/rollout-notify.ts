import type { Transaction } from "kysely";
import type { StoreAdapter } from "./adapter.ts";
import type { RolloutRow } from "./rollout-rows.ts";
import type { Database } from "./schema.ts";

const num = (v: number | string): number => Number(v);

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
 * The device's desired release for `name` becomes (name, counter), and its generation grows, as
 * ReleaseStore.setDesiredRelease does, but inside the caller's transaction. False (nothing
 * written) when the release or the device is gone or the device is not approved.
 */
export async function writeDesiredRelease(trx: Transaction<Database>, adapter: StoreAdapter, orgId: string, deviceId: string, name: string, counter: number, now: number): Promise<boolean> {
  const release = await trx.selectFrom("releases").selectAll().where("org_id", "=", orgId).where("name", "=", name).where("counter", "=", counter).executeTakeFirst();
  let q = trx.selectFrom("devices").select(["generation", "lifecycle"]).where("org_id", "=", orgId).where("id", "=", deviceId);
  if (adapter.rowLocks) q = q.forUpdate();
  const device = await q.executeTakeFirst();
  // A device rejected or decommissioned since the plan gets nothing.
  if (!release || !device || device.lifecycle !== "approved") return false;
  const desired = {
    desired_target: release.target_path,
    desired_counter: num(release.counter),
    desired_version: release.version,
    desired_kind: release.kind,
    desired_at: now,
  };
  const existing = await trx.selectFrom("device_releases").select("name").where("device_id", "=", deviceId).where("name", "=", name).executeTakeFirst();
  if (existing) {
    await trx.updateTable("device_releases").set(desired).where("device_id", "=", deviceId).where("name", "=", name).execute();
  } else {
    await trx
      .insertInto("device_releases")
      .values({ org_id: orgId, device_id: deviceId, name, ...desired, current_version: "", current_counter: 0 })
      .execute();
  }
  await trx.updateTable("devices").set({ generation: num(device.generation) + 1, updated_at: now }).where("id", "=", deviceId).execute();
  await adapter.notifyInTransaction(trx, orgId, deviceId);
  return true;
}
