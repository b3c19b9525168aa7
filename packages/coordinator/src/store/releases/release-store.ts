import type { Kysely, Selectable } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import { putDesiredRelease, putReleaseControl, type ControlAction } from "./desired-release.ts";
export type { ControlAction } from "./desired-release.ts";
import type { Database } from "../schema/schema.ts";
import { GroupCommit } from "../group-commit.ts";
import { num } from "../columns.ts";

/** A signed release, as recorded when its targets metadata was accepted. */
export interface ReleaseRow {
  orgId: string;
  name: string;
  counter: number;
  version: string;
  kind: string;
  targetPath: string;
  sha256: string;
  length: number;
  /** The signed custom.flotilla object, as JSON text. */
  meta: string;
  createdAt: number;
}

/** One release name on one device: what it should run and what it last said it runs. */
export interface DeviceReleaseRow {
  orgId: string;
  deviceId: string;
  name: string;
  desiredTarget: string;
  desiredCounter: number;
  desiredVersion: string;
  desiredKind: string;
  desiredAt: number;
  currentVersion: string;
  currentCounter: number;
  /** running, stopped or removed (undeployed; kept so its restart counter keeps growing). */
  runState: string;
  restartGen: number;
  purgeData: boolean;
  /** The last control command (restart, stop, start, undeploy), by whom (actor) and when; "" and 0 if none. */
  controlAction: string;
  controlBy: string;
  controlAt: number;
  /** What the device last reported after a control command, when and why (on control-failed). */
  reportedState: string;
  reportedAt: number;
  reportedError: string;
}

/** What an agent reported after carrying out a control command. */
export interface ControlReport {
  state: "stopped" | "started" | "restarted" | "removed" | "control-failed";
  error: string;
}

/** One step an agent reported while installing a release. */
export interface ReleaseStepRow {
  orgId: string;
  deviceId: string;
  seq: number;
  time: number;
  name: string;
  targetPath: string;
  step: string;
  bytesDone: number;
  bytesTotal: number;
  error: string;
}

/** Who needs a release: devices (names) that run it, devices told to run it, and rollouts (ids) that install it or roll back to it. */
export interface ReleaseUsers {
  running: string[];
  told: string[];
  rollouts: string[];
}

/** An artifact an organization uploaded, as its owner row says. */
export interface ArtifactOwnerRow {
  orgId: string;
  sha256: string;
  length: number;
  createdAt: number;
}

/** Releases and their deployment to devices; every method is scoped by organization. */
export interface ReleaseStore {
  /** Records releases; a (name, counter) the organization already has is left as it was. */
  addReleases(rows: ReleaseRow[]): Promise<void>;
  listReleases(orgId: string, name?: string): Promise<ReleaseRow[]>;
  /** The release of this name with this human version (the highest counter if several). */
  findRelease(orgId: string, name: string, version: string): Promise<ReleaseRow | undefined>;
  getRelease(orgId: string, name: string, counter: number): Promise<ReleaseRow | undefined>;
  /** Whether the organization has a release whose artifact has this sha256 and length. */
  hasArtifact(orgId: string, sha256: string, length: number): Promise<boolean>;
  /**
   * Records that the organization has uploaded this artifact's bytes itself (hash-checked), so
   * it may release it. Artifacts are stored once for all organizations; this is what keeps one
   * from releasing, and so downloading, another's. Recording it again changes nothing.
   */
  recordArtifactOwner(orgId: string, sha256: string, length: number, now: number): Promise<void>;
  /** Whether the organization has uploaded this artifact (this sha256 and length) itself. */
  ownsArtifact(orgId: string, sha256: string, length: number): Promise<boolean>;
  /**
   * Makes `release` the device's desired release for its name and bumps the device's
   * generation in the same transaction, so its Watch stream sends it. False (nothing written)
   * if there is no such device or it is not approved.
   */
  setDesiredRelease(orgId: string, deviceId: string, release: ReleaseRow, now: number): Promise<boolean>;
  /** The device's rows, undeployed ones (run state removed) included. */
  listDeviceReleases(orgId: string, deviceId: string): Promise<DeviceReleaseRow[]>;
  /** Unscoped, in one statement: the rows of all these devices, by device and then name. */
  listDeviceReleasesOf(deviceIds: readonly string[]): Promise<DeviceReleaseRow[]>;
  /**
   * Restarts (bumps the restart counter; runs it), stops, starts or undeploys (run state
   * removed) a device's release and bumps the device's generation in one transaction, recording
   * who asked and when. "missing": the device runs no release of that name.
   */
  controlRelease(c: { orgId: string; deviceId: string; name: string; action: ControlAction; purgeData: boolean; by: string; now: number }): Promise<"ok" | "missing" | "not-approved">;
  /**
   * Records a step (once per seq) and, when given, what the device now runs for that name, or
   * what it reported after a control command.
   */
  recordReleaseStep(step: ReleaseStepRow, current?: { version: string; counter: number }, control?: ControlReport): Promise<void>;
  /** The device's latest `limit` steps, oldest first. */
  listReleaseSteps(orgId: string, deviceId: string, limit: number): Promise<ReleaseStepRow[]>;

  /**
   * Who needs the release (name, counter): devices whose current release it is (`running`),
   * devices whose desired release it is and that do not run it (`told`), and running or paused
   * rollouts that install it or return devices to it (`rollouts`).
   */
  releaseUsers(orgId: string, name: string, counter: number): Promise<ReleaseUsers>;
  /** Releases removed from the organization (see removeRelease), by name and counter. */
  listRemovedReleases(orgId: string, name?: string): Promise<ReleaseRow[]>;
  /** The highest counter of a release of this name, removed ones included (0: none). */
  highestCounter(orgId: string, name: string): Promise<number>;
  /**
   * Deletes the release row, keeping what it was among the removed releases (its counter is
   * never given again); devices told to run it (desired, not running it) are told to run
   * what they run instead (their desired state for the name is dropped when that release is gone
   * too), and their generation bumped so their Watch stream says so. Devices that run it keep
   * their rows. Returns the names of the devices told otherwise; false when there was no such release.
   */
  removeRelease(orgId: string, name: string, counter: number, now: number): Promise<string[] | false>;
  /**
   * The organization's uploaded artifacts no release of its own names, recorded before
   * `createdBefore` (younger ones may be on their way into a release), at most `limit`.
   */
  unreleasedArtifacts(orgId: string, createdBefore: number, limit: number): Promise<ArtifactOwnerRow[]>;
  /** Forgets that the organization uploaded the artifact, unless a release of its own names it; whether it was forgotten. */
  dropArtifactOwner(orgId: string, sha256: string): Promise<boolean>;
  /** Whether any organization (but `exceptOrgId`) has uploaded the artifact or has a release naming it. */
  artifactNeeded(sha256: string, exceptOrgId?: string): Promise<boolean>;
}

const ACTIVE_ROLLOUTS = ["running", "paused"];

function toRelease(r: Selectable<Database["releases"]> | Selectable<Database["removed_releases"]>): ReleaseRow {
  return {
    orgId: r.org_id,
    name: r.name,
    counter: num(r.counter),
    version: r.version,
    kind: r.kind,
    targetPath: r.target_path,
    sha256: r.sha256,
    length: num(r.length),
    meta: r.meta,
    createdAt: num(r.created_at),
  };
}

export class KyselyReleaseStore implements ReleaseStore {
  /**
   * Devices' release steps share commits, like their reports (KyselyDeviceStore.reports): every
   * device of a rollout reports each of its steps at about the same time, and a commit per step
   * (an fsync on SQLite, blocking the event loop) made the rollout's cost grow with its size.
   */
  readonly steps: GroupCommit;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {
    this.steps = new GroupCommit(db, 256);
  }

  async addReleases(rows: ReleaseRow[]): Promise<void> {
    if (rows.length === 0) return;
    await this.db.transaction().execute(async (trx) => {
      for (const r of rows) {
        await trx
          .insertInto("releases")
          .values({
            org_id: r.orgId,
            name: r.name,
            counter: r.counter,
            version: r.version,
            kind: r.kind,
            target_path: r.targetPath,
            sha256: r.sha256,
            length: r.length,
            meta: r.meta,
            created_at: r.createdAt,
          })
          .onConflict((oc) => oc.columns(["org_id", "name", "counter"]).doNothing())
          .execute();
      }
    });
  }

  async listReleases(orgId: string, name?: string): Promise<ReleaseRow[]> {
    let q = this.db.selectFrom("releases").selectAll().where("org_id", "=", orgId);
    if (name) q = q.where("name", "=", name);
    return (await q.orderBy("name").orderBy("counter").execute()).map(toRelease);
  }

  async findRelease(orgId: string, name: string, version: string): Promise<ReleaseRow | undefined> {
    const r = await this.db
      .selectFrom("releases")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("name", "=", name)
      .where("version", "=", version)
      .orderBy("counter", "desc")
      .executeTakeFirst();
    return r && toRelease(r);
  }

  async getRelease(orgId: string, name: string, counter: number): Promise<ReleaseRow | undefined> {
    const r = await this.db
      .selectFrom("releases")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("name", "=", name)
      .where("counter", "=", counter)
      .executeTakeFirst();
    return r && toRelease(r);
  }

  async hasArtifact(orgId: string, sha256: string, length: number): Promise<boolean> {
    const r = await this.db
      .selectFrom("releases")
      .select("name")
      .where("org_id", "=", orgId)
      .where("sha256", "=", sha256)
      .where("length", "=", length)
      .executeTakeFirst();
    return r !== undefined;
  }

  async recordArtifactOwner(orgId: string, sha256: string, length: number, now: number): Promise<void> {
    await this.db
      .insertInto("artifact_owners")
      .values({ org_id: orgId, sha256, length, created_at: now })
      .onConflict((oc) => oc.columns(["org_id", "sha256"]).doNothing())
      .execute();
  }

  async ownsArtifact(orgId: string, sha256: string, length: number): Promise<boolean> {
    const r = await this.db
      .selectFrom("artifact_owners")
      .select("org_id")
      .where("org_id", "=", orgId)
      .where("sha256", "=", sha256)
      .where("length", "=", length)
      .executeTakeFirst();
    return r !== undefined;
  }

  async setDesiredRelease(orgId: string, deviceId: string, release: ReleaseRow, now: number): Promise<boolean> {
    const ok = await this.db.transaction().execute((trx) => putDesiredRelease(trx, this.adapter, orgId, deviceId, release, now));
    if (ok) this.adapter.notifyAfterCommit(orgId, deviceId);
    return ok;
  }

  async listDeviceReleases(orgId: string, deviceId: string): Promise<DeviceReleaseRow[]> {
    const rows = await this.db
      .selectFrom("device_releases")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("device_id", "=", deviceId)
      .orderBy("name")
      .execute();
    return rows.map(toDeviceRelease);
  }

  async listDeviceReleasesOf(deviceIds: readonly string[]): Promise<DeviceReleaseRow[]> {
    if (deviceIds.length === 0) return [];
    const rows = await this.db.selectFrom("device_releases").selectAll().where("device_id", "in", deviceIds).orderBy("device_id").orderBy("name").execute();
    return rows.map(toDeviceRelease);
  }

  async controlRelease(c: { orgId: string; deviceId: string; name: string; action: ControlAction; purgeData: boolean; by: string; now: number }): Promise<"ok" | "missing" | "not-approved"> {
    const r = await this.db.transaction().execute((trx) => putReleaseControl(trx, this.adapter, c));
    if (r === "ok") this.adapter.notifyAfterCommit(c.orgId, c.deviceId);
    return r;
  }

  async recordReleaseStep(s: ReleaseStepRow, current?: { version: string; counter: number }, control?: ControlReport): Promise<void> {
    await this.steps.run(async (trx) => {
      await trx
        .insertInto("release_steps")
        .values({
          org_id: s.orgId,
          device_id: s.deviceId,
          seq: s.seq,
          time: s.time,
          name: s.name,
          target_path: s.targetPath,
          step: s.step,
          bytes_done: s.bytesDone,
          bytes_total: s.bytesTotal,
          error: s.error,
        })
        .onConflict((oc) => oc.columns(["device_id", "seq"]).doNothing())
        .execute();
      if (current) {
        await trx
          .updateTable("device_releases")
          .set({ current_version: current.version, current_counter: current.counter })
          .where("org_id", "=", s.orgId)
          .where("device_id", "=", s.deviceId)
          .where("name", "=", s.name)
          .execute();
      }
      if (control) {
        await trx
          .updateTable("device_releases")
          .set({ reported_state: control.state, reported_at: s.time, reported_error: control.error, ...(control.state === "removed" && { current_version: "", current_counter: 0 }) })
          .where("org_id", "=", s.orgId)
          .where("device_id", "=", s.deviceId)
          .where("name", "=", s.name)
          .execute();
      }
    });
  }

  async listReleaseSteps(orgId: string, deviceId: string, limit: number): Promise<ReleaseStepRow[]> {
    const rows = await this.db
      .selectFrom("release_steps")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("device_id", "=", deviceId)
      .orderBy("seq", "desc")
      .limit(limit)
      .execute();
    return rows.reverse().map((r) => ({
      orgId: r.org_id,
      deviceId: r.device_id,
      seq: num(r.seq),
      time: num(r.time),
      name: r.name,
      targetPath: r.target_path,
      step: r.step,
      bytesDone: num(r.bytes_done),
      bytesTotal: num(r.bytes_total),
      error: r.error,
    }));
  }

  async releaseUsers(orgId: string, name: string, counter: number): Promise<ReleaseUsers> {
    const rows = await this.db
      .selectFrom("device_releases")
      .innerJoin("devices", "devices.id", "device_releases.device_id")
      .select(["devices.name as device", "device_releases.current_counter", "device_releases.desired_counter"])
      .where("device_releases.org_id", "=", orgId)
      .where("device_releases.name", "=", name)
      .where((eb) => eb.or([eb("device_releases.current_counter", "=", counter), eb("device_releases.desired_counter", "=", counter)]))
      .orderBy("devices.name")
      .execute();
    const rollouts = await this.db
      .selectFrom("rollouts")
      .select("id")
      .where("org_id", "=", orgId)
      .where("status", "in", ACTIVE_ROLLOUTS)
      .where("release_name", "=", name)
      .where((eb) =>
        eb.or([
          eb("release_counter", "=", counter),
          eb.exists(
            eb
              .selectFrom("rollout_devices")
              .select("device_id")
              .whereRef("rollout_devices.rollout_id", "=", "rollouts.id")
              .where((d) => d.or([d("rollout_devices.previous_counter", "=", counter), d("rollout_devices.rollback_counter", "=", counter)])),
          ),
        ]),
      )
      .orderBy("created_at")
      .execute();
    return {
      running: rows.filter((r) => num(r.current_counter) === counter).map((r) => r.device),
      told: rows.filter((r) => num(r.current_counter) !== counter).map((r) => r.device),
      rollouts: rollouts.map((r) => r.id),
    };
  }

  async listRemovedReleases(orgId: string, name?: string): Promise<ReleaseRow[]> {
    let q = this.db.selectFrom("removed_releases").selectAll().where("org_id", "=", orgId);
    if (name) q = q.where("name", "=", name);
    return (await q.orderBy("name").orderBy("counter").execute()).map(toRelease);
  }

  async highestCounter(orgId: string, name: string): Promise<number> {
    const max = async (table: "releases" | "removed_releases") =>
      num((await this.db.selectFrom(table).select((eb) => eb.fn.max("counter").as("m")).where("org_id", "=", orgId).where("name", "=", name).executeTakeFirst())?.m ?? 0);
    return Math.max(await max("releases"), await max("removed_releases"));
  }

  async removeRelease(orgId: string, name: string, counter: number, now: number): Promise<string[] | false> {
    const notify: string[] = [];
    const told = await this.db.transaction().execute(async (trx) => {
      const gone = await trx.deleteFrom("releases").where("org_id", "=", orgId).where("name", "=", name).where("counter", "=", counter).returningAll().executeTakeFirst();
      if (!gone) return false;
      await trx
        .insertInto("removed_releases")
        .values({ ...gone, removed_at: now })
        .onConflict((oc) => oc.columns(["org_id", "name", "counter"]).doNothing())
        .execute();
      const rows = await trx
        .selectFrom("device_releases")
        .innerJoin("devices", "devices.id", "device_releases.device_id")
        .select(["device_releases.device_id", "devices.name as device", "device_releases.current_counter"])
        .where("device_releases.org_id", "=", orgId)
        .where("device_releases.name", "=", name)
        .where("device_releases.desired_counter", "=", counter)
        .where("device_releases.current_counter", "!=", counter)
        .orderBy("devices.name")
        .execute();
      for (const r of rows) {
        const current = await trx
          .selectFrom("releases")
          .selectAll()
          .where("org_id", "=", orgId)
          .where("name", "=", name)
          .where("counter", "=", num(r.current_counter))
          .executeTakeFirst();
        const put = current ? await putDesiredRelease(trx, this.adapter, orgId, r.device_id, toRelease(current), now) : false;
        if (!put) {
          await trx.deleteFrom("device_releases").where("org_id", "=", orgId).where("device_id", "=", r.device_id).where("name", "=", name).execute();
          await trx
            .updateTable("devices")
            .set((eb) => ({ generation: eb("generation", "+", 1), updated_at: now }))
            .where("org_id", "=", orgId)
            .where("id", "=", r.device_id)
            .execute();
          await this.adapter.notifyInTransaction(trx, orgId, r.device_id);
        }
        notify.push(r.device_id);
      }
      return rows.map((r) => r.device);
    });
    for (const id of notify) this.adapter.notifyAfterCommit(orgId, id);
    return told;
  }

  async unreleasedArtifacts(orgId: string, createdBefore: number, limit: number): Promise<ArtifactOwnerRow[]> {
    const rows = await this.db
      .selectFrom("artifact_owners")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("created_at", "<", createdBefore)
      .where((eb) =>
        eb.not(
          eb.exists(
            eb.selectFrom("releases").select("name").where("releases.org_id", "=", orgId).whereRef("releases.sha256", "=", "artifact_owners.sha256"),
          ),
        ),
      )
      .orderBy("created_at")
      .limit(limit)
      .execute();
    return rows.map((r) => ({ orgId: r.org_id, sha256: r.sha256, length: num(r.length), createdAt: num(r.created_at) }));
  }

  async dropArtifactOwner(orgId: string, sha256: string): Promise<boolean> {
    const r = await this.db
      .deleteFrom("artifact_owners")
      .where("org_id", "=", orgId)
      .where("sha256", "=", sha256)
      .where((eb) => eb.not(eb.exists(eb.selectFrom("releases").select("name").where("releases.org_id", "=", orgId).where("releases.sha256", "=", sha256))))
      .executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async artifactNeeded(sha256: string, exceptOrgId?: string): Promise<boolean> {
    let owners = this.db.selectFrom("artifact_owners").select("org_id").where("sha256", "=", sha256);
    let releases = this.db.selectFrom("releases").select("org_id").where("sha256", "=", sha256);
    if (exceptOrgId !== undefined) {
      owners = owners.where("org_id", "!=", exceptOrgId);
      releases = releases.where("org_id", "!=", exceptOrgId);
    }
    if (await owners.executeTakeFirst()) return true;
    const release = await releases.executeTakeFirst();
    return release !== undefined;
  }
}

function toDeviceRelease(r: Selectable<Database["device_releases"]>): DeviceReleaseRow {
  return {
    orgId: r.org_id,
    deviceId: r.device_id,
    name: r.name,
    desiredTarget: r.desired_target,
    desiredCounter: num(r.desired_counter),
    desiredVersion: r.desired_version,
    desiredKind: r.desired_kind,
    desiredAt: num(r.desired_at),
    currentVersion: r.current_version,
    currentCounter: num(r.current_counter),
    runState: r.run_state,
    restartGen: num(r.restart_gen),
    purgeData: num(r.purge_data) === 1,
    controlAction: r.control_action,
    controlBy: r.control_by,
    controlAt: num(r.control_at),
    reportedState: r.reported_state,
    reportedAt: num(r.reported_at),
    reportedError: r.reported_error,
  };
}
