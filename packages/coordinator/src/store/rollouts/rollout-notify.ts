import type { Selectable, Transaction } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import { desiredColumns, putDesiredRelease } from "../releases/desired-release.ts";
import type { RolloutDeviceState, RolloutRow } from "./rollout-rows.ts";
import type { Database } from "../schema/schema.ts";
import { num } from "../columns.ts";

/** Devices per multi-row statement: well under SQLite's and PostgreSQL's bound-parameter limits. */
const CHUNK = 400;

/**
 * Sets the rollout's release as the desired one of each device in `picked` (rows of
 * rollout_devices) and records the notification (and what the device ran before) on its rollout
 * row, in the caller's transaction. A device that runs the release already becomes healthy; one
 * no longer approved (or gone), skipped. Batched: per chunk of devices a fixed handful of
 * multi-row statements (read what they run, lock the approved ones, upsert their desired
 * release, bump their generation, upsert the rollout rows), not several statements per device.
 * Returns each device's new state and the devices whose desired state changed (their Watch
 * streams must be woken after commit, `adapter.notifyAfterCommit`).
 */
export async function notifyDevices(
  trx: Transaction<Database>,
  adapter: StoreAdapter,
  r: RolloutRow,
  picked: readonly Selectable<Database["rollout_devices"]>[],
  now: number,
): Promise<{ states: Map<string, RolloutDeviceState>; woken: string[] }> {
  const states = new Map<string, RolloutDeviceState>();
  const woken: string[] = [];
  if (picked.length === 0) return { states, woken };
  const release = await trx.selectFrom("releases").selectAll().where("org_id", "=", r.orgId).where("name", "=", r.releaseName).where("counter", "=", r.releaseCounter).executeTakeFirst();
  for (let i = 0; i < picked.length; i += CHUNK) {
    const chunk = picked.slice(i, i + CHUNK);
    const ids = chunk.map((d) => d.device_id);
    const running = await trx
      .selectFrom("device_releases")
      .select(["device_id", "current_version", "current_counter"])
      .where("org_id", "=", r.orgId)
      .where("name", "=", r.releaseName)
      .where("device_id", "in", ids)
      .execute();
    const current = new Map(running.map((c) => [c.device_id, { version: c.current_version, counter: num(c.current_counter) }]));
    const toWrite = ids.filter((id) => current.get(id)?.counter !== r.releaseCounter);
    let approved = new Set<string>();
    if (release && toWrite.length > 0) {
      // Locked in id order (PostgreSQL), as putDesiredRelease locks each device it writes.
      let q = trx.selectFrom("devices").select(["id", "lifecycle"]).where("org_id", "=", r.orgId).where("id", "in", toWrite).orderBy("id");
      if (adapter.rowLocks) q = q.forUpdate();
      approved = new Set((await q.execute()).filter((d) => d.lifecycle === "approved").map((d) => d.id));
    }
    const write = toWrite.filter((id) => approved.has(id));
    if (release && write.length > 0) {
      const desired = desiredColumns({ targetPath: release.target_path, counter: num(release.counter), version: release.version, kind: release.kind }, now);
      await trx
        .insertInto("device_releases")
        .values(write.map((id) => ({ org_id: r.orgId, device_id: id, name: r.releaseName, ...desired, ...NEW_CONTROL, current_version: "", current_counter: 0 })))
        .onConflict((oc) => oc.columns(["device_id", "name"]).doUpdateSet(desired))
        .execute();
      await trx
        .updateTable("devices")
        .set((eb) => ({ generation: eb("generation", "+", 1), updated_at: now }))
        .where("id", "in", write)
        .execute();
      await adapter.notifyManyInTransaction(trx, r.orgId, write);
      woken.push(...write);
    }
    const wrote = new Set(write);
    const rows = chunk.map((d) => {
      const c = current.get(d.device_id);
      const runsIt = c?.counter === r.releaseCounter;
      const state: RolloutDeviceState = runsIt ? "healthy" : wrote.has(d.device_id) ? "notified" : "skipped";
      states.set(d.device_id, state);
      return {
        ...d,
        state,
        error: runsIt ? "already running this release" : state === "notified" ? "" : "device no longer approved, or release gone",
        previous_version: c?.version ?? "",
        previous_counter: c?.counter ?? 0,
        notified_at: now,
        updated_at: now,
      };
    });
    // Every row exists (the devices were read from rollout_devices under the rollout's lock): the
    // insert always takes its conflict branch, one statement updating each row with its own values.
    await trx
      .insertInto("rollout_devices")
      .values(rows)
      .onConflict((oc) =>
        oc.columns(["rollout_id", "device_id"]).doUpdateSet((eb) => ({
          state: eb.ref("excluded.state"),
          error: eb.ref("excluded.error"),
          previous_version: eb.ref("excluded.previous_version"),
          previous_counter: eb.ref("excluded.previous_counter"),
          notified_at: eb.ref("excluded.notified_at"),
          updated_at: eb.ref("excluded.updated_at"),
        })),
      )
      .execute();
  }
  return { states, woken };
}

/** The control columns of a new device_releases row (migration 0014_device_control), as putDesiredRelease writes them. */
const NEW_CONTROL = { restart_gen: 0, control_by: "", control_at: 0, reported_at: 0 };

/**
 * The device's desired release for `name` becomes (name, counter), in the caller's transaction.
 * False (nothing written) when the release or the device is gone or the device is not approved.
 */
export async function writeDesiredRelease(trx: Transaction<Database>, adapter: StoreAdapter, orgId: string, deviceId: string, name: string, counter: number, now: number): Promise<boolean> {
  const release = await trx.selectFrom("releases").selectAll().where("org_id", "=", orgId).where("name", "=", name).where("counter", "=", counter).executeTakeFirst();
  if (!release) return false;
  return putDesiredRelease(trx, adapter, orgId, deviceId, { name, targetPath: release.target_path, counter: num(release.counter), version: release.version, kind: release.kind }, now);
}
