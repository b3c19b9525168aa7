import type { Transaction } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import type { Database } from "../schema/schema.ts";

/** The release a device is told to run for one name. */
export interface DesiredReleaseFields {
  name: string;
  targetPath: string;
  counter: number;
  version: string;
  kind: string;
}

/**
 * Makes `release` the device's desired release for its name and bumps the device's generation,
 * in the caller's transaction (the device row locked on PostgreSQL), and queues the wake-up of
 * its Watch stream for other replicas. The caller wakes this process's stream after commit
 * (`adapter.notifyAfterCommit`). False, writing nothing, when the device is gone or not approved
 * (rejected or decommissioned since it was chosen).
 */
export async function putDesiredRelease(trx: Transaction<Database>, adapter: StoreAdapter, orgId: string, deviceId: string, release: DesiredReleaseFields, now: number): Promise<boolean> {
  let q = trx.selectFrom("devices").select(["generation", "lifecycle"]).where("org_id", "=", orgId).where("id", "=", deviceId);
  if (adapter.rowLocks) q = q.forUpdate();
  const device = await q.executeTakeFirst();
  if (!device || device.lifecycle !== "approved") return false;
  const desired = {
    desired_target: release.targetPath,
    desired_counter: release.counter,
    desired_version: release.version,
    desired_kind: release.kind,
    desired_at: now,
  };
  const existing = await trx.selectFrom("device_releases").select("name").where("device_id", "=", deviceId).where("name", "=", release.name).executeTakeFirst();
  if (existing) {
    await trx.updateTable("device_releases").set(desired).where("device_id", "=", deviceId).where("name", "=", release.name).execute();
  } else {
    await trx
      .insertInto("device_releases")
      .values({ org_id: orgId, device_id: deviceId, name: release.name, ...desired, current_version: "", current_counter: 0 })
      .execute();
  }
  await trx.updateTable("devices").set({ generation: Number(device.generation) + 1, updated_at: now }).where("id", "=", deviceId).execute();
  await adapter.notifyInTransaction(trx, orgId, deviceId);
  return true;
}
