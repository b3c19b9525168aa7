import type { Kysely } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import { num } from "../columns.ts";
import type { Database } from "../schema/schema.ts";
import { toDevice, type DeviceRow } from "./device-rows.ts";

/** A device's last move between organizations. */
export interface DeviceMoveRow {
  deviceId: string;
  fromOrg: string;
  toOrg: string;
  /** The DeviceMoveEndorsement JSON its agent checks. */
  endorsement: string;
  movedAt: number;
}

export type MoveResult =
  | { ok: true; device: DeviceRow }
  | { ok: false; reason: "no-device" }
  | { ok: false; reason: "claimed"; rolloutId: string }
  | { ok: false; reason: "name-taken" };

/** Moving devices between organizations of one coordinator. */
export interface DeviceMoveStore {
  /**
   * In one transaction: moves the device from `fromOrg` to `toOrg` (generation + 1), forgets
   * what belonged to the old organization (its desired releases and release steps, its logs and
   * metrics, its sessions) and records the move. Refuses, writing nothing, while a rollout claims
   * the device or when `toOrg` has a device of the same name.
   */
  moveDevice(deviceId: string, fromOrg: string, toOrg: string, endorsement: string, now: number): Promise<MoveResult>;
  /** The device's last move, if it was ever moved. */
  getDeviceMove(deviceId: string): Promise<DeviceMoveRow | undefined>;
}

export class KyselyDeviceMoveStore implements DeviceMoveStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {}

  async moveDevice(deviceId: string, fromOrg: string, toOrg: string, endorsement: string, now: number): Promise<MoveResult> {
    const result = await this.db.transaction().execute(async (trx): Promise<MoveResult> => {
      let q = trx.selectFrom("devices").selectAll().where("org_id", "=", fromOrg).where("id", "=", deviceId);
      if (this.adapter.rowLocks) q = q.forUpdate();
      const r = await q.executeTakeFirst();
      if (!r) return { ok: false, reason: "no-device" };
      const claim = await trx.selectFrom("rollout_claims").select("rollout_id").where("device_id", "=", deviceId).executeTakeFirst();
      if (claim) return { ok: false, reason: "claimed", rolloutId: claim.rollout_id };
      const clash = await trx.selectFrom("devices").select("id").where("org_id", "=", toOrg).where("name", "=", r.name).executeTakeFirst();
      if (clash) return { ok: false, reason: "name-taken" };
      const set = { org_id: toOrg, generation: num(r.generation) + 1, updated_at: now };
      await trx.updateTable("devices").set(set).where("id", "=", deviceId).execute();
      for (const table of ["device_releases", "release_steps", "log_records", "metric_samples", "telemetry_streams"] as const) {
        await trx.deleteFrom(table).where("device_id", "=", deviceId).execute();
      }
      await trx.deleteFrom("sessions").where("principal_kind", "=", "device").where("principal_id", "=", deviceId).execute();
      const move = { device_id: deviceId, from_org: fromOrg, to_org: toOrg, endorsement, moved_at: now };
      await trx
        .insertInto("device_moves")
        .values(move)
        .onConflict((oc) => oc.column("device_id").doUpdateSet({ from_org: fromOrg, to_org: toOrg, endorsement, moved_at: now }))
        .execute();
      await this.adapter.notifyInTransaction(trx, fromOrg, deviceId);
      await this.adapter.notifyInTransaction(trx, toOrg, deviceId);
      return { ok: true, device: toDevice({ ...r, ...set }) };
    });
    if (result.ok) {
      this.adapter.notifyAfterCommit(fromOrg, deviceId);
      this.adapter.notifyAfterCommit(toOrg, deviceId);
    }
    return result;
  }

  async getDeviceMove(deviceId: string): Promise<DeviceMoveRow | undefined> {
    const r = await this.db.selectFrom("device_moves").selectAll().where("device_id", "=", deviceId).executeTakeFirst();
    return r && { deviceId: r.device_id, fromOrg: r.from_org, toOrg: r.to_org, endorsement: r.endorsement, movedAt: num(r.moved_at) };
  }
}
