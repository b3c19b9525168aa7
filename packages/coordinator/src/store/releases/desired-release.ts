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

/** The device_releases columns that make `release` a device's desired release from `now`. */
export function desiredColumns(release: Omit<DesiredReleaseFields, "name">, now: number) {
  return {
    desired_target: release.targetPath,
    desired_counter: release.counter,
    desired_version: release.version,
    desired_kind: release.kind,
    desired_at: now,
    // A new deployment runs, whatever was stopped or undeployed before.
    run_state: "running",
    purge_data: 0,
    control_action: "",
    reported_state: "",
    reported_error: "",
  };
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
  const desired = desiredColumns(release, now);
  const existing = await trx.selectFrom("device_releases").select("name").where("device_id", "=", deviceId).where("name", "=", release.name).executeTakeFirst();
  if (existing) {
    await trx.updateTable("device_releases").set(desired).where("device_id", "=", deviceId).where("name", "=", release.name).execute();
  } else {
    await trx
      .insertInto("device_releases")
      .values({ org_id: orgId, device_id: deviceId, name: release.name, ...desired, ...NEW_CONTROL, current_version: "", current_counter: 0 })
      .execute();
  }
  await trx.updateTable("devices").set({ generation: Number(device.generation) + 1, updated_at: now }).where("id", "=", deviceId).execute();
  await adapter.notifyInTransaction(trx, orgId, deviceId);
  return true;
}

/** The control columns of a new device_releases row (migration 0014_device_control). */
const NEW_CONTROL = { restart_gen: 0, control_by: "", control_at: 0, reported_at: 0 };

/** A control command on one release of one device (see ReleaseStore.controlRelease). */
export type ControlAction = "restart" | "stop" | "start" | "undeploy";

/**
 * Applies a control command to the device's row for `name` and bumps the device's generation,
 * in the caller's transaction. "missing" when the device runs no such release (never deployed,
 * or undeployed already, unless undeploying again), "not-approved" when the device is not approved.
 */
export async function putReleaseControl(
  trx: Transaction<Database>,
  adapter: StoreAdapter,
  c: { orgId: string; deviceId: string; name: string; action: ControlAction; purgeData: boolean; by: string; now: number },
): Promise<"ok" | "missing" | "not-approved"> {
  let q = trx.selectFrom("devices").select(["generation", "lifecycle"]).where("org_id", "=", c.orgId).where("id", "=", c.deviceId);
  if (adapter.rowLocks) q = q.forUpdate();
  const device = await q.executeTakeFirst();
  if (!device) return "missing";
  if (device.lifecycle !== "approved") return "not-approved";
  const row = await trx
    .selectFrom("device_releases")
    .select(["run_state", "restart_gen"])
    .where("org_id", "=", c.orgId)
    .where("device_id", "=", c.deviceId)
    .where("name", "=", c.name)
    .executeTakeFirst();
  if (!row || (row.run_state === "removed" && c.action !== "undeploy")) return "missing";
  const restartGen = Number(row.restart_gen) + (c.action === "restart" ? 1 : 0);
  const runState = c.action === "stop" ? "stopped" : c.action === "undeploy" ? "removed" : "running";
  await trx
    .updateTable("device_releases")
    .set({
      run_state: runState,
      restart_gen: restartGen,
      purge_data: c.action === "undeploy" && c.purgeData ? 1 : 0,
      control_action: c.action,
      control_by: c.by,
      control_at: c.now,
      // What the device reports next answers this command (times from the device's clock are not compared).
      reported_state: "",
      reported_error: "",
    })
    .where("org_id", "=", c.orgId)
    .where("device_id", "=", c.deviceId)
    .where("name", "=", c.name)
    .execute();
  await trx.updateTable("devices").set({ generation: Number(device.generation) + 1, updated_at: c.now }).where("id", "=", c.deviceId).execute();
  await adapter.notifyInTransaction(trx, c.orgId, c.deviceId);
  return "ok";
}
