import type { Kysely, Selectable } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import { notifyDevices, writeDesiredRelease } from "./rollout-notify.ts";
import { copyCounts, countDevices, moveCount } from "./rollout-rows.ts";
import type {
  NotifyRequest,
  RolloutChanges,
  RolloutCounts,
  RolloutDeviceRow,
  RolloutDeviceState,
  RolloutDeviceView,
  RolloutRow,
  RolloutSnapshot,
  RolloutSpecRow,
  RolloutStatus,
  TransitionRead,
} from "./rollout-rows.ts";
import type { Database } from "../schema/schema.ts";
import { num, numOrNull } from "../columns.ts";
import { GroupCommit } from "../group-commit.ts";

export type * from "./rollout-rows.ts";

export type CreateRolloutResult = { ok: true } | { ok: false; rolloutId: string; deviceName: string };

/** Where a device stands in a rollout's device order: the key a page of devices starts after. */
export interface RolloutDeviceKey {
  wave: number;
  position: number;
  deviceId: string;
}

/** One page of a rollout's devices, optionally of one state or one wave. */
export interface RolloutDevicePage {
  limit: number;
  after?: RolloutDeviceKey;
  state?: RolloutDeviceState;
  wave?: number;
}

/** Rollouts and their per-device state; every method is scoped by organization except `activeRollouts`. */
export interface RolloutStore {
  /**
   * Records a rollout, its devices and a claim on each device, in one transaction. Refuses,
   * writing nothing, when another running or paused rollout holds one of the devices.
   */
  createRollout(rollout: RolloutRow, devices: RolloutDeviceRow[]): Promise<CreateRolloutResult>;
  getRollout(orgId: string, id: string): Promise<RolloutRow | undefined>;
  /** Newest first, at most `limit`, older than `before` (created_at, id) when given. */
  listRollouts(orgId: string, limit: number, before?: { createdAt: number; id: string }): Promise<RolloutRow[]>;
  /**
   * By wave, then plan position, then device id. With `page`: at most `limit` of them after the
   * key, read on the index rollout_devices(rollout_id, wave, position, device_id), so a page
   * costs the same in a rollout of any size. Without it every device: for tests and small rollouts.
   */
  listRolloutDevices(orgId: string, id: string, page?: RolloutDevicePage): Promise<RolloutDeviceRow[]>;
  /** Unscoped, for the engine: every running or paused rollout. */
  activeRollouts(): Promise<{ orgId: string; id: string }[]>;
  /** Devices of the organization whose latest release step was a failure or a rollback. */
  unhealthyDevices(orgId: string): Promise<Set<string>>;
  /** The running or paused rollout that holds the device (or the aborted one returning it to its previous release), if any. */
  claimOf(orgId: string, deviceId: string): Promise<string | undefined>;
  /** Devices of the rollout told to install it and not yet done (notified or installing, or rolling back). */
  inFlightDevices(orgId: string, id: string): Promise<string[]>;
  /**
   * One transition: locks the rollout (row lock on PostgreSQL; SQLite has one writer), reads it,
   * its wave counters and only the devices `read` names, lets `decide` choose the changes,
   * applies them (counters included) and bumps `version`, all in one transaction. What it reads
   * and writes does not grow with the rollout's size, but for the devices a notification picks
   * (batched statements) and an abort with roll-back (`allDevices`). Claims are released when
   * the rollout ends. Returns the rollout after the transition and whether anything changed;
   * undefined when there is no such rollout.
   *
   * Transitions share commits (see GroupCommit): those requested while one commits go in the
   * next commit together, applied one after another in the order they were requested, so
   * transitions of one rollout keep their order and each sees what the ones before it wrote.
   */
  transition(
    orgId: string,
    id: string,
    now: number,
    decide: (s: RolloutSnapshot) => RolloutChanges | undefined,
    read?: TransitionRead,
  ): Promise<{ rollout: RolloutRow; changed: boolean } | undefined>;
  /** The rollout's wave counters (wave → state → devices), as transitions keep them. */
  rolloutCounts(orgId: string, id: string): Promise<RolloutCounts | undefined>;
}

function toRollout(r: Selectable<Database["rollouts"]>): RolloutRow {
  return {
    id: r.id,
    orgId: r.org_id,
    releaseName: r.release_name,
    releaseVersion: r.release_version,
    releaseCounter: num(r.release_counter),
    spec: JSON.parse(r.spec) as RolloutSpecRow,
    waves: JSON.parse(r.waves) as RolloutRow["waves"],
    ineligible: JSON.parse(r.ineligible) as RolloutRow["ineligible"],
    status: r.status as RolloutStatus,
    reason: r.reason,
    currentWave: num(r.current_wave),
    waveFinishedAt: numOrNull(r.wave_finished_at),
    approvedWave: num(r.approved_wave),
    toleratedFailures: num(r.tolerated_failures),
    deadlineAt: numOrNull(r.deadline_at),
    createdBy: r.created_by,
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
    version: num(r.version),
  };
}

function toDevice(r: Selectable<Database["rollout_devices"]>): RolloutDeviceRow {
  return {
    rolloutId: r.rollout_id,
    orgId: r.org_id,
    deviceId: r.device_id,
    name: r.name,
    wave: num(r.wave),
    position: num(r.position),
    state: r.state as RolloutDeviceState,
    bytesDone: num(r.bytes_done),
    bytesTotal: num(r.bytes_total),
    error: r.error,
    previousVersion: r.previous_version,
    previousCounter: num(r.previous_counter),
    rollbackCounter: num(r.rollback_counter),
    notifiedAt: numOrNull(r.notified_at),
    updatedAt: num(r.updated_at),
  };
}

const ACTIVE = ["running", "paused"];
/** Rows per multi-row statement: well under SQLite's and PostgreSQL's bound-parameter limits. */
const CHUNK = 500;

export class KyselyRolloutStore implements RolloutStore {
  /**
   * Transitions share commits: a 10,000-device rollout makes 70,000 release steps, and one
   * commit (an fsync on SQLite, with the event loop blocked) per step bounded how fast it went.
   */
  readonly transitions: GroupCommit;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {
    this.transitions = new GroupCommit(db, 256);
  }

  async createRollout(r: RolloutRow, devices: RolloutDeviceRow[]): Promise<CreateRolloutResult> {
    return this.db.transaction().execute(async (trx): Promise<CreateRolloutResult> => {
      const ids = devices.map((d) => d.deviceId);
      for (let i = 0; i < ids.length; i += 500) {
        const held = await trx
          .selectFrom("rollout_claims")
          .select(["device_id", "rollout_id"])
          .where("org_id", "=", r.orgId)
          .where("device_id", "in", ids.slice(i, i + 500))
          .orderBy("device_id")
          .executeTakeFirst();
        if (held) return { ok: false, rolloutId: held.rollout_id, deviceName: devices.find((d) => d.deviceId === held.device_id)?.name ?? held.device_id };
      }
      await trx
        .insertInto("rollouts")
        .values({
          id: r.id,
          org_id: r.orgId,
          release_name: r.releaseName,
          release_version: r.releaseVersion,
          release_counter: r.releaseCounter,
          spec: JSON.stringify(r.spec),
          waves: JSON.stringify(r.waves),
          ineligible: JSON.stringify(r.ineligible),
          status: r.status,
          reason: r.reason,
          current_wave: r.currentWave,
          wave_finished_at: r.waveFinishedAt,
          approved_wave: r.approvedWave,
          tolerated_failures: r.toleratedFailures,
          deadline_at: r.deadlineAt,
          created_by: r.createdBy,
          created_at: r.createdAt,
          updated_at: r.updatedAt,
          version: r.version,
          counts: JSON.stringify(countDevices(devices)),
        })
        .execute();
      // Multi-row inserts in chunks (a statement per 500 devices, not two per device).
      for (let i = 0; i < devices.length; i += CHUNK) {
        const chunk = devices.slice(i, i + CHUNK);
        await trx
          .insertInto("rollout_devices")
          .values(
            chunk.map((d) => ({
              rollout_id: r.id,
              org_id: r.orgId,
              device_id: d.deviceId,
              name: d.name,
              wave: d.wave,
              position: d.position,
              state: d.state,
              bytes_done: d.bytesDone,
              bytes_total: d.bytesTotal,
              error: d.error,
              previous_version: d.previousVersion,
              previous_counter: d.previousCounter,
              rollback_counter: d.rollbackCounter,
              notified_at: d.notifiedAt,
              updated_at: d.updatedAt,
            })),
          )
          .execute();
        // The primary key makes a concurrent claim of the same device fail the whole transaction.
        await trx
          .insertInto("rollout_claims")
          .values(chunk.map((d) => ({ device_id: d.deviceId, org_id: r.orgId, rollout_id: r.id })))
          .execute();
      }
      return { ok: true };
    });
  }

  async getRollout(orgId: string, id: string): Promise<RolloutRow | undefined> {
    const r = await this.db.selectFrom("rollouts").selectAll().where("org_id", "=", orgId).where("id", "=", id).executeTakeFirst();
    return r && toRollout(r);
  }

  async listRollouts(orgId: string, limit: number, before?: { createdAt: number; id: string }): Promise<RolloutRow[]> {
    let q = this.db.selectFrom("rollouts").selectAll().where("org_id", "=", orgId);
    if (before) q = q.where((eb) => eb.or([eb("created_at", "<", before.createdAt), eb.and([eb("created_at", "=", before.createdAt), eb("id", "<", before.id)])]));
    const rows = await q.orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
    return rows.map(toRollout);
  }

  async listRolloutDevices(orgId: string, id: string, page?: RolloutDevicePage): Promise<RolloutDeviceRow[]> {
    let q = this.db.selectFrom("rollout_devices").selectAll().where("org_id", "=", orgId).where("rollout_id", "=", id);
    if (page?.state !== undefined) q = q.where("state", "=", page.state);
    if (page?.wave !== undefined) q = q.where("wave", "=", page.wave);
    const after = page?.after;
    // A row-value comparison, which both SQLite and PostgreSQL seek to on the index (the same
    // condition spelled with OR makes SQLite walk the index from the rollout's first device).
    if (after) q = q.where((eb) => eb(eb.refTuple("wave", "position", "device_id"), ">", eb.tuple(after.wave, after.position, after.deviceId)));
    q = q.orderBy("wave").orderBy("position").orderBy("device_id");
    if (page) q = q.limit(Math.max(0, page.limit));
    return (await q.execute()).map(toDevice);
  }

  async activeRollouts(): Promise<{ orgId: string; id: string }[]> {
    const rows = await this.db.selectFrom("rollouts").select(["org_id", "id"]).where("status", "in", ACTIVE).orderBy("created_at").execute();
    return rows.map((r) => ({ orgId: r.org_id, id: r.id }));
  }

  async unhealthyDevices(orgId: string): Promise<Set<string>> {
    const rows = await this.db
      .selectFrom("release_steps as rs")
      .select("rs.device_id")
      .where("rs.org_id", "=", orgId)
      .where("rs.step", "in", ["failed", "rolled-back"])
      .where("rs.seq", "=", (eb) =>
        eb.selectFrom("release_steps as r2").select((e) => e.fn.max("r2.seq").as("m")).whereRef("r2.device_id", "=", "rs.device_id"),
      )
      .execute();
    return new Set(rows.map((r) => r.device_id));
  }

  async inFlightDevices(orgId: string, id: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom("rollout_devices")
      .select("device_id")
      .where("org_id", "=", orgId)
      .where("rollout_id", "=", id)
      .where("state", "in", UNFINISHED.filter((s) => s !== "pending"))
      .execute();
    return rows.map((r) => r.device_id);
  }

  async claimOf(orgId: string, deviceId: string): Promise<string | undefined> {
    const r = await this.db.selectFrom("rollout_claims").select("rollout_id").where("org_id", "=", orgId).where("device_id", "=", deviceId).executeTakeFirst();
    return r?.rollout_id;
  }

  async transition(
    orgId: string,
    id: string,
    now: number,
    decide: (s: RolloutSnapshot) => RolloutChanges | undefined,
    read: TransitionRead = {},
  ): Promise<{ rollout: RolloutRow; changed: boolean } | undefined> {
    // `woken` is per attempt: a batch that failed runs its jobs again, each alone.
    let woken: string[] = [];
    const result = await this.transitions.run(async (trx) => {
      woken = [];
      let q = trx.selectFrom("rollouts").selectAll().where("org_id", "=", orgId).where("id", "=", id);
      if (this.adapter.rowLocks) q = q.forUpdate();
      const row = await q.executeTakeFirst();
      if (!row) return undefined;
      const rollout = toRollout(row);
      const counts: RolloutCounts = row.counts === null ? await countRows(trx, id) : (JSON.parse(row.counts) as RolloutCounts);
      const devices = read.allDevices ? await readViews(trx, rollout) : undefined;
      const device = read.deviceId ? (devices?.find((d) => d.deviceId === read.deviceId) ?? (await readViews(trx, rollout, read.deviceId))[0]) : undefined;
      const changes = decide({ rollout, counts, ...(device ? { device } : {}), ...(devices ? { devices } : {}) });
      if (!changes || isEmpty(changes)) return { rollout, changed: false };
      const next = copyCounts(counts);
      const byId = new Map<string, RolloutDeviceView>();
      for (const d of devices ?? []) byId.set(d.deviceId, d);
      if (device) byId.set(device.deviceId, device);
      for (const d of changes.devices ?? []) {
        const before = byId.get(d.deviceId);
        if (!before) throw new Error(`rollout ${id}: a change of device ${d.deviceId}, which the transition did not read`);
        await trx
          .updateTable("rollout_devices")
          .set({
            state: d.state,
            updated_at: now,
            ...(d.error !== undefined ? { error: d.error.slice(0, 4096) } : {}),
            ...(d.bytesDone !== undefined ? { bytes_done: d.bytesDone } : {}),
            ...(d.bytesTotal !== undefined ? { bytes_total: d.bytesTotal } : {}),
          })
          .where("rollout_id", "=", id)
          .where("device_id", "=", d.deviceId)
          .execute();
        moveCount(next, before.wave, before.state, d.state);
        byId.set(d.deviceId, { ...before, state: d.state });
      }
      if (changes.skipUnfinished !== undefined) {
        // One statement for every unfinished device (the deadline passed), and the counters follow.
        await trx
          .updateTable("rollout_devices")
          .set({ state: "skipped", error: changes.skipUnfinished.slice(0, 4096), updated_at: now })
          .where("rollout_id", "=", id)
          .where("state", "in", UNFINISHED)
          .execute();
        for (const [wave, c] of Object.entries(next)) for (const s of UNFINISHED) moveCount(next, Number(wave), s, "skipped", c[s] ?? 0);
      }
      if (changes.notify) {
        const picked = await pickForNotify(trx, id, changes.notify);
        const outcome = await notifyDevices(trx, this.adapter, rollout, picked, now);
        for (const d of picked) moveCount(next, d.wave, "pending", outcome.states.get(d.device_id)!);
        woken.push(...outcome.woken);
      }
      const returning = new Set<string>();
      for (const b of changes.rollBack ?? []) {
        const d = byId.get(b.deviceId);
        if (!d || !(await writeDesiredRelease(trx, this.adapter, orgId, b.deviceId, rollout.releaseName, b.counter, now))) continue;
        woken.push(b.deviceId);
        if (!b.track) continue;
        returning.add(b.deviceId);
        await trx
          .updateTable("rollout_devices")
          .set({ state: "rolling-back", rollback_counter: b.counter, error: `returning to ${d.previousVersion} (#${b.counter})`, bytes_done: 0, bytes_total: 0, updated_at: now })
          .where("rollout_id", "=", id)
          .where("device_id", "=", b.deviceId)
          .execute();
        moveCount(next, d.wave, d.state, "rolling-back");
      }
      const after = { ...rollout, ...changes.rollout, updatedAt: now, version: rollout.version + 1 };
      await trx
        .updateTable("rollouts")
        .set({
          status: after.status,
          reason: after.reason.slice(0, 1024),
          current_wave: after.currentWave,
          wave_finished_at: after.waveFinishedAt,
          approved_wave: after.approvedWave,
          tolerated_failures: after.toleratedFailures,
          updated_at: now,
          version: after.version,
          counts: JSON.stringify(next),
        })
        .where("id", "=", id)
        .execute();
      if (!ACTIVE.includes(after.status) && ACTIVE.includes(rollout.status)) {
        // A device returning to its previous release stays held until it reports the outcome.
        let release = trx.deleteFrom("rollout_claims").where("rollout_id", "=", id);
        if (returning.size > 0) release = release.where("device_id", "not in", [...returning]);
        await release.execute();
      }
      const done = changes.releaseClaims ?? [];
      if (done.length > 0) await trx.deleteFrom("rollout_claims").where("rollout_id", "=", id).where("device_id", "in", done).execute();
      return { rollout: after, changed: true };
    });
    for (const deviceId of woken) this.adapter.notifyAfterCommit(orgId, deviceId);
    return result;
  }

  async rolloutCounts(orgId: string, id: string): Promise<RolloutCounts | undefined> {
    const r = await this.db.selectFrom("rollouts").select(["counts"]).where("org_id", "=", orgId).where("id", "=", id).executeTakeFirst();
    if (!r) return undefined;
    return r.counts === null ? countRows(this.db, id) : (JSON.parse(r.counts) as RolloutCounts);
  }
}

/** Every state but the final ones: what a passed deadline makes skipped. */
const UNFINISHED: RolloutDeviceState[] = ["pending", "notified", "downloading", "verifying", "activating", "health-checking", "rolling-back"];

/** Counters from the devices themselves (a rollout whose row has none). */
async function countRows(db: Kysely<Database>, id: string): Promise<RolloutCounts> {
  const rows = await db
    .selectFrom("rollout_devices")
    .select(["wave", "state", (eb) => eb.fn.countAll().as("n")])
    .where("rollout_id", "=", id)
    .groupBy(["wave", "state"])
    .execute();
  const c: RolloutCounts = {};
  for (const r of rows) (c[num(r.wave)] ??= {})[r.state as RolloutDeviceState] = Number(r.n);
  return c;
}

/** The rollout's devices (or the one given) with their connection and the release they run. */
async function readViews(db: Kysely<Database>, rollout: RolloutRow, deviceId?: string): Promise<RolloutDeviceView[]> {
  let q = db
    .selectFrom("rollout_devices as rd")
    .leftJoin("devices as d", "d.id", "rd.device_id")
    .leftJoin("device_releases as dr", (j) => j.onRef("dr.device_id", "=", "rd.device_id").on("dr.name", "=", rollout.releaseName))
    .selectAll("rd")
    .select(["d.connected", "d.last_seen_at", "dr.current_counter"])
    .where("rd.org_id", "=", rollout.orgId)
    .where("rd.rollout_id", "=", rollout.id);
  if (deviceId !== undefined) q = q.where("rd.device_id", "=", deviceId);
  const rows = await q.orderBy("rd.wave").orderBy("rd.position").execute();
  return rows.map((d) => ({
    ...toDevice(d),
    connected: num(d.connected ?? 0) === 1,
    lastSeenAt: numOrNull(d.last_seen_at ?? null),
    currentCounter: num(d.current_counter ?? 0),
  }));
}

/**
 * The devices a notify request names: pending devices of the wave that are online (or the one
 * that just connected), in plan order, at most `limit`. One query on the index
 * rollout_devices(rollout_id, wave, state, position): it reads the wave's pending devices only.
 */
async function pickForNotify(db: Kysely<Database>, id: string, n: NotifyRequest): Promise<Selectable<Database["rollout_devices"]>[]> {
  let q = db
    .selectFrom("rollout_devices as rd")
    .innerJoin("devices as d", "d.id", "rd.device_id")
    .selectAll("rd")
    .where("rd.rollout_id", "=", id)
    .where("rd.wave", "=", n.wave)
    .where("rd.state", "=", "pending")
    .where((eb) => {
      const online = eb.and([eb("d.connected", "=", 1), eb("d.last_seen_at", ">=", n.onlineSince)]);
      const connected = n.deviceId !== undefined ? [eb("rd.device_id", "=", n.deviceId)] : [];
      return n.wholeWave ? eb.or([online, ...connected]) : eb.or(connected.length > 0 ? connected : [eb.lit(false)]);
    })
    .orderBy("rd.position");
  if (Number.isFinite(n.limit)) q = q.limit(Math.max(0, n.limit));
  return q.execute();
}

function isEmpty(c: RolloutChanges): boolean {
  return !c.rollout && !c.devices?.length && c.skipUnfinished === undefined && !c.notify && !c.rollBack?.length && !c.releaseClaims?.length;
}
