import type { Kysely } from "kysely";
import { claim, type StoreAdapter } from "../adapter.ts";
import { num } from "../columns.ts";
import { StoreConflictError } from "../errors.ts";
import type { Database } from "../schema/schema.ts";
import { GroupCommit } from "../group-commit.ts";
import { sortKeys, toDevice, toToken, tokenRecord, type DevicePatch, type DeviceReport, type DeviceRow, type EnrollResult, type JoinTokenRow, type NewDevice } from "./device-rows.ts";
import { summarizeDevices, type DeviceSummary } from "./device-summary.ts";
import { enrollOnce } from "./enroll.ts";

export type * from "./device-rows.ts";
export type { DeviceSummary } from "./device-summary.ts";

/** Ids per statement in batched updates: far below SQLite's and PostgreSQL's parameter limits. */
const CHUNK = 500;

/** Enrollments that lose a race for a name or key are retried this many times in all. */
const ENROLL_ATTEMPTS = 3;

/** Join tokens, the devices they enroll, their desired and reported state, and stream acks. */
export interface DeviceStore {
  /** Throws `StoreConflictError` when a token with this id exists. */
  createJoinToken(token: JoinTokenRow): Promise<void>;
  listJoinTokens(orgId: string): Promise<JoinTokenRow[]>;
  /** Returns false when the organization has no such token. */
  revokeJoinToken(orgId: string, id: string, now: number): Promise<boolean>;
  /** Unscoped: the token an enrolling agent presents. */
  getJoinToken(id: string): Promise<JoinTokenRow | undefined>;

  /**
   * In one transaction: checks the token (exists, not revoked, not expired at `now`, not used
   * up), counts one use, and creates the device in the token's organization with the token's
   * labels, pending or approved as the token says. Nothing is written when it refuses. Two
   * enrollments at once never share a name or a key: the later one takes the next free name, or
   * is refused as `key-enrolled`.
   */
  enrollDevice(tokenId: string, device: NewDevice, now: number): Promise<EnrollResult>;

  getDevice(orgId: string, id: string): Promise<DeviceRow | undefined>;
  /**
   * Unscoped, in one statement: the devices of these ids that exist, in no particular order (the
   * Watch streams' fan-out reads a batch of woken devices at once; callers check the org).
   */
  getDevicesByIds(ids: readonly string[]): Promise<DeviceRow[]>;
  getDeviceByName(orgId: string, name: string): Promise<DeviceRow | undefined>;
  /** Unscoped: the device an authenticating agent claims to be. */
  findDeviceByPublicKey(publicKey: string): Promise<DeviceRow | undefined>;
  /** Every device of the organization, ordered by name. */
  listDevices(orgId: string): Promise<DeviceRow[]>;
  /**
   * At most `limit` devices of the organization in (name, id) order, after `after` when given:
   * a page of `device ls` (the unique index devices_org_name). Cost is one index range scan per page.
   */
  listDevicesPage(orgId: string, limit: number, after?: { name: string; id: string }): Promise<DeviceRow[]>;
  /** How many devices the organization has (one index count). */
  countDevices(orgId: string): Promise<number>;
  /** Online, offline, pending and failing counts (see device-summary.ts); online: seen since `onlineSince`. */
  summarizeDevices(orgId: string, onlineSince: number): Promise<DeviceSummary>;
  /**
   * Applies a change of desired state and bumps `generation` by one, in one transaction.
   * Returns undefined when the organization has no such device.
   */
  updateDevice(orgId: string, id: string, patch: DevicePatch, now: number): Promise<DeviceRow | undefined>;
  /**
   * Changes the labels of several devices of `orgId` in one transaction (a bulk edit takes
   * batches of a few hundred); decommissioned and rejected ones stay as they are. Returns how
   * many changed.
   */
  updateDeviceLabels(orgId: string, ids: string[], patch: Pick<DevicePatch, "setLabels" | "removeLabels">, now: number): Promise<number>;
  /** Reported state; does not bump `generation`. */
  recordFacts(
    orgId: string,
    id: string,
    report: { facts: Record<string, unknown>; agentVersion: string; capabilities: string[] },
    now: number,
  ): Promise<void>;
  setObservedGeneration(orgId: string, id: string, generation: number): Promise<void>;
  setConnection(orgId: string, id: string, connected: boolean, lastSeenAt: number): Promise<void>;
  /**
   * Many devices' presence in one transaction: `connected` ones are marked connected and
   * `disconnected` ones not, all last seen at `lastSeenAt`. A few statements whatever the
   * number of devices (ids in chunks); ids of no device are ignored.
   */
  recordPresence(connected: readonly string[], disconnected: readonly string[], lastSeenAt: number): Promise<void>;
  /**
   * A batch of a device's reported state in one transaction: the latest facts and observed
   * generation when given, and each stream's new acknowledged seq.
   */
  recordReport(orgId: string, id: string, report: DeviceReport, now: number): Promise<void>;

  /** The highest contiguous seq stored for (device, stream); 0 when none. */
  getAckedSeq(deviceId: string, stream: string): Promise<number>;
  setAckedSeq(deviceId: string, stream: string, seq: number): Promise<void>;
  /** The highest contiguous seq stored for each stream of the device that has one. */
  getAckedSeqs(deviceId: string): Promise<Map<string, number>>;

  /**
   * Calls `listener` after any committed change of a device's desired state (updateDevice,
   * enrollDevice), on this coordinator and, on PostgreSQL, on every replica sharing the
   * database (LISTEN/NOTIFY). Returns a function that removes the listener.
   */
  onDeviceChange(listener: (orgId: string, deviceId: string) => void): () => void;
}

export class KyselyDeviceStore implements DeviceStore {
  /**
   * Devices' reports share commits. A commit waits for the disk (on SQLite, synchronous=FULL, it
   * blocks the event loop for its fsync): after a label change or a rollout step reached 2,000
   * devices, their 2,000 reports came as 2,000 commits, and the coordinator stalled for seconds.
   * No linger: reports that arrive together (in one turn of the event loop, or while a commit
   * runs) go in one commit, and a lone report is not held back.
   */
  readonly reports: GroupCommit;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {
    this.reports = new GroupCommit(db, 256);
  }

  async createJoinToken(t: JoinTokenRow): Promise<void> {
    await claim(this.adapter, `join token ${t.id}`, () => this.db.insertInto("join_tokens").values(tokenRecord(t)).execute());
  }

  async listJoinTokens(orgId: string): Promise<JoinTokenRow[]> {
    const rows = await this.db.selectFrom("join_tokens").selectAll().where("org_id", "=", orgId).orderBy("created_at").orderBy("id").execute();
    return rows.map(toToken);
  }

  async revokeJoinToken(orgId: string, id: string, now: number): Promise<boolean> {
    const r = await this.db
      .updateTable("join_tokens")
      .set({ revoked_at: now })
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async getJoinToken(id: string): Promise<JoinTokenRow | undefined> {
    const r = await this.db.selectFrom("join_tokens").selectAll().where("id", "=", id).executeTakeFirst();
    return r && toToken(r);
  }

  async enrollDevice(tokenId: string, device: NewDevice, now: number): Promise<EnrollResult> {
    for (let attempt = 1; ; attempt++) {
      let result: EnrollResult;
      try {
        result = await this.db.transaction().execute((trx) => enrollOnce(trx, this.adapter, tokenId, device, now));
      } catch (err) {
        // Another replica's enrollment took the name (or the key) between our check and our
        // insert; a new attempt sees it, and picks the next name or refuses the key.
        if (!this.adapter.isUniqueViolation(err)) throw err;
        if (attempt >= ENROLL_ATTEMPTS) throw new StoreConflictError(`a device named ${device.name}`, { cause: err });
        continue;
      }
      if (result.ok) this.adapter.notifyAfterCommit(result.device.orgId, result.device.id);
      return result;
    }
  }

  async getDevice(orgId: string, id: string): Promise<DeviceRow | undefined> {
    const r = await this.db.selectFrom("devices").selectAll().where("org_id", "=", orgId).where("id", "=", id).executeTakeFirst();
    return r && toDevice(r);
  }

  async getDevicesByIds(ids: readonly string[]): Promise<DeviceRow[]> {
    if (ids.length === 0) return [];
    const rows = await this.db.selectFrom("devices").selectAll().where("id", "in", ids).execute();
    return rows.map(toDevice);
  }

  async getDeviceByName(orgId: string, name: string): Promise<DeviceRow | undefined> {
    const r = await this.db.selectFrom("devices").selectAll().where("org_id", "=", orgId).where("name", "=", name).executeTakeFirst();
    return r && toDevice(r);
  }

  async findDeviceByPublicKey(publicKey: string): Promise<DeviceRow | undefined> {
    const r = await this.db.selectFrom("devices").selectAll().where("public_key", "=", publicKey).executeTakeFirst();
    return r && toDevice(r);
  }

  async listDevices(orgId: string): Promise<DeviceRow[]> {
    const rows = await this.db.selectFrom("devices").selectAll().where("org_id", "=", orgId).orderBy("name").execute();
    return rows.map(toDevice);
  }

  async listDevicesPage(orgId: string, limit: number, after?: { name: string; id: string }): Promise<DeviceRow[]> {
    let q = this.db.selectFrom("devices").selectAll().where("org_id", "=", orgId);
    if (after) q = q.where((eb) => eb.or([eb("name", ">", after.name), eb.and([eb("name", "=", after.name), eb("id", ">", after.id)])]));
    const rows = await q.orderBy("name").orderBy("id").limit(limit).execute();
    return rows.map(toDevice);
  }

  summarizeDevices(orgId: string, onlineSince: number): Promise<DeviceSummary> {
    return summarizeDevices(this.db, orgId, onlineSince);
  }

  async countDevices(orgId: string): Promise<number> {
    const r = await this.db.selectFrom("devices").select((eb) => eb.fn.countAll().as("n")).where("org_id", "=", orgId).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  async updateDevice(orgId: string, id: string, patch: DevicePatch, now: number): Promise<DeviceRow | undefined> {
    const updated = await this.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom("devices").selectAll().where("org_id", "=", orgId).where("id", "=", id);
      if (this.adapter.rowLocks) q = q.forUpdate();
      const r = await q.executeTakeFirst();
      if (!r) return undefined;
      const labels = JSON.parse(r.labels) as Record<string, string>;
      Object.assign(labels, patch.setLabels ?? {});
      for (const k of patch.removeLabels ?? []) delete labels[k];
      const set = {
        lifecycle: patch.lifecycle ?? r.lifecycle,
        labels: JSON.stringify(sortKeys(labels)),
        generation: num(r.generation) + 1,
        updated_at: now,
      };
      await trx.updateTable("devices").set(set).where("id", "=", id).execute();
      await this.adapter.notifyInTransaction(trx, orgId, id);
      return toDevice({ ...r, ...set });
    });
    if (updated) this.adapter.notifyAfterCommit(orgId, id);
    return updated;
  }

  async updateDeviceLabels(orgId: string, ids: string[], patch: Pick<DevicePatch, "setLabels" | "removeLabels">, now: number): Promise<number> {
    if (ids.length === 0) return 0;
    const changed = await this.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom("devices").select(["id", "labels", "generation"]).where("org_id", "=", orgId).where("id", "in", ids).where("lifecycle", "in", ["pending", "approved"]);
      if (this.adapter.rowLocks) q = q.forUpdate();
      const rows = await q.execute();
      for (const r of rows) {
        const labels = JSON.parse(r.labels) as Record<string, string>;
        Object.assign(labels, patch.setLabels ?? {});
        for (const k of patch.removeLabels ?? []) delete labels[k];
        await trx
          .updateTable("devices")
          .set({ labels: JSON.stringify(sortKeys(labels)), generation: num(r.generation) + 1, updated_at: now })
          .where("id", "=", r.id)
          .execute();
      }
      await this.adapter.notifyManyInTransaction(trx, orgId, rows.map((r) => r.id));
      return rows.map((r) => r.id);
    });
    for (const id of changed) this.adapter.notifyAfterCommit(orgId, id);
    return changed.length;
  }

  async recordFacts(
    orgId: string,
    id: string,
    report: { facts: Record<string, unknown>; agentVersion: string; capabilities: string[] },
    now: number,
  ): Promise<void> {
    await this.db
      .updateTable("devices")
      .set({
        facts: JSON.stringify(report.facts),
        agent_version: report.agentVersion,
        capabilities: JSON.stringify(report.capabilities),
        updated_at: now,
      })
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .execute();
  }

  async setObservedGeneration(orgId: string, id: string, generation: number): Promise<void> {
    await this.db.updateTable("devices").set({ observed_generation: generation }).where("org_id", "=", orgId).where("id", "=", id).execute();
  }

  async setConnection(orgId: string, id: string, connected: boolean, lastSeenAt: number): Promise<void> {
    await this.db
      .updateTable("devices")
      .set({ connected: connected ? 1 : 0, last_seen_at: lastSeenAt })
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .execute();
  }

  async recordPresence(connected: readonly string[], disconnected: readonly string[], lastSeenAt: number): Promise<void> {
    if (connected.length === 0 && disconnected.length === 0) return;
    await this.db.transaction().execute(async (trx) => {
      for (const [ids, flag] of [[connected, 1], [disconnected, 0]] as const) {
        for (let i = 0; i < ids.length; i += CHUNK) {
          await trx
            .updateTable("devices")
            .set({ connected: flag, last_seen_at: lastSeenAt })
            .where("id", "in", ids.slice(i, i + CHUNK))
            .execute();
        }
      }
    });
  }

  async recordReport(orgId: string, id: string, report: DeviceReport, now: number): Promise<void> {
    const { facts, observedGeneration, acked } = report;
    if (!facts && observedGeneration === undefined && acked.size === 0) return;
    await this.reports.run(async (trx) => {
      if (facts || observedGeneration !== undefined) {
        await trx
          .updateTable("devices")
          .set({
            ...(facts && {
              facts: JSON.stringify(facts.facts),
              agent_version: facts.agentVersion,
              capabilities: JSON.stringify(facts.capabilities),
              updated_at: now,
            }),
            ...(observedGeneration !== undefined && { observed_generation: observedGeneration }),
          })
          .where("org_id", "=", orgId)
          .where("id", "=", id)
          .execute();
      }
      for (const [stream, seq] of acked) {
        await trx
          .insertInto("device_streams")
          .values({ device_id: id, stream, acked_seq: seq })
          .onConflict((oc) => oc.columns(["device_id", "stream"]).doUpdateSet({ acked_seq: seq }))
          .execute();
      }
    });
  }

  async getAckedSeqs(deviceId: string): Promise<Map<string, number>> {
    const rows = await this.db.selectFrom("device_streams").select(["stream", "acked_seq"]).where("device_id", "=", deviceId).execute();
    return new Map(rows.map((r) => [r.stream, num(r.acked_seq)]));
  }

  async getAckedSeq(deviceId: string, stream: string): Promise<number> {
    const r = await this.db
      .selectFrom("device_streams")
      .select("acked_seq")
      .where("device_id", "=", deviceId)
      .where("stream", "=", stream)
      .executeTakeFirst();
    return r ? num(r.acked_seq) : 0;
  }

  async setAckedSeq(deviceId: string, stream: string, seq: number): Promise<void> {
    await this.db
      .insertInto("device_streams")
      .values({ device_id: deviceId, stream, acked_seq: seq })
      .onConflict((oc) => oc.columns(["device_id", "stream"]).doUpdateSet({ acked_seq: seq }))
      .execute();
  }

  onDeviceChange(listener: (orgId: string, deviceId: string) => void): () => void {
    return this.adapter.listen(listener);
  }
}
