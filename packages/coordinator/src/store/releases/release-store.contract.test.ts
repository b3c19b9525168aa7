/**
 * The release store's part of the store contract: the same tests on SQLite always and on
 * PostgreSQL when FLOTILLA_TEST_POSTGRES_URL is set.
 */
import { Migrator } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { migrationProvider } from "../migrations/migrations.ts";
import { storeBackends } from "../testing.ts";
import { type ReleaseRow, type Store } from "../index.ts";
import type { KyselyReleaseStore } from "./release-store.ts";

const NOW = 1_800_000_000_000;

const backends = storeBackends;

function release(orgId: string, counter: number, over: Partial<ReleaseRow> = {}): ReleaseRow {
  return {
    orgId,
    name: "webapp",
    counter,
    version: `1.${counter}.0`,
    kind: "bundle",
    targetPath: `webapp/${counter}/webapp.tar.gz`,
    sha256: String(counter).repeat(64).slice(0, 64),
    length: 1000 + counter,
    meta: "{}",
    createdAt: NOW + counter,
    ...over,
  };
}

for (const backend of backends) {
  describe.skipIf(!backend.enabled)(`release store contract on ${backend.name}`, () => {
    let store: Store;
    let drop: () => Promise<void>;
    let deviceA: string;

    beforeEach(async () => {
      ({ store, drop } = await backend.create());
      await store.access.createOrg({ id: "orgA", name: "acme", createdAt: NOW });
      await store.access.createOrg({ id: "orgB", name: "globex", createdAt: NOW });
      await store.devices.createJoinToken({
        id: "tokA", orgId: "orgA", secretHash: "h", labels: {}, usesAllowed: 5, uses: 0, expiresAt: NOW * 2, autoApprove: true, createdAt: NOW, revokedAt: null,
      });
      const r = await store.devices.enrollDevice("tokA", { id: "dev_a", publicKey: "p".repeat(43), name: "host", facts: {}, agentVersion: "0.1.0", capabilities: [] }, NOW);
      if (!r.ok) throw new Error(r.reason);
      deviceA = r.device.id;
    });
    afterEach(async () => {
      await store.close();
      await drop();
    });

    it("records releases once per (name, counter), scoped by organization", async () => {
      await store.releases.addReleases([release("orgA", 1), release("orgA", 2)]);
      await store.releases.addReleases([release("orgA", 2, { version: "changed" }), release("orgB", 1)]);
      expect((await store.releases.listReleases("orgA")).map((r) => [r.counter, r.version])).toEqual([[1, "1.1.0"], [2, "1.2.0"]]);
      expect((await store.releases.findRelease("orgA", "webapp", "1.2.0"))?.counter).toBe(2);
      expect(await store.releases.findRelease("orgB", "webapp", "1.2.0")).toBeUndefined();
      expect((await store.releases.getRelease("orgA", "webapp", 1))?.length).toBe(1001);
      expect(await store.releases.hasArtifact("orgA", release("orgA", 1).sha256, 1001)).toBe(true);
      expect(await store.releases.hasArtifact("orgB", release("orgA", 2).sha256, 1002)).toBe(false);
    });

    it("records who uploaded an artifact, once, and answers only for that organization and length", async () => {
      const sha = "ab".repeat(32);
      expect(await store.releases.ownsArtifact("orgA", sha, 10)).toBe(false);
      await store.releases.recordArtifactOwner("orgA", sha, 10, NOW);
      await store.releases.recordArtifactOwner("orgA", sha, 10, NOW + 1);
      expect(await store.releases.ownsArtifact("orgA", sha, 10)).toBe(true);
      expect(await store.releases.ownsArtifact("orgA", sha, 11)).toBe(false);
      expect(await store.releases.ownsArtifact("orgA", "cd".repeat(32), 10)).toBe(false);
      // Another organization owns nothing until it uploads the bytes itself.
      expect(await store.releases.ownsArtifact("orgB", sha, 10)).toBe(false);
      await store.releases.recordArtifactOwner("orgB", sha, 10, NOW + 2);
      expect(await store.releases.ownsArtifact("orgB", sha, 10)).toBe(true);
      // Releases alone make no one an owner (only uploads, and the migration, do).
      await store.releases.addReleases([release("orgB", 7)]);
      expect(await store.releases.ownsArtifact("orgB", release("orgB", 7).sha256, 1007)).toBe(false);
    });

    it("sets a device's desired release and bumps its generation in one step, and notifies", async () => {
      await store.releases.addReleases([release("orgA", 1), release("orgA", 2)]);
      const before = (await store.devices.getDevice("orgA", deviceA))!.generation;
      const seen: string[] = [];
      const off = store.devices.onDeviceChange((_org, id) => seen.push(id));
      expect(await store.releases.setDesiredRelease("orgA", deviceA, release("orgA", 1), NOW)).toBe(true);
      expect(await store.releases.setDesiredRelease("orgA", deviceA, release("orgA", 2), NOW + 1)).toBe(true);
      off();
      expect((await store.devices.getDevice("orgA", deviceA))!.generation).toBe(before + 2);
      expect(seen).toContain(deviceA);
      const rows = await store.releases.listDeviceReleases("orgA", deviceA);
      expect(rows.map((r) => [r.name, r.desiredCounter, r.desiredTarget, r.currentVersion])).toEqual([["webapp", 2, "webapp/2/webapp.tar.gz", ""]]);
      expect(await store.releases.setDesiredRelease("orgB", deviceA, release("orgB", 1), NOW)).toBe(false);
      expect(await store.releases.listDeviceReleases("orgB", deviceA)).toEqual([]);
    });

    it("records each step once per seq, keeps the newest, and updates what the device runs", async () => {
      await store.releases.setDesiredRelease("orgA", deviceA, release("orgA", 1), NOW);
      const step = { orgId: "orgA", deviceId: deviceA, name: "webapp", targetPath: "webapp/1/webapp.tar.gz", bytesDone: 0, bytesTotal: 0, error: "" };
      await store.releases.recordReleaseStep({ ...step, seq: 1, time: NOW, step: "checking" });
      await store.releases.recordReleaseStep({ ...step, seq: 1, time: NOW, step: "checking" });
      await store.releases.recordReleaseStep({ ...step, seq: 2, time: NOW + 1, step: "downloading", bytesDone: 5, bytesTotal: 10 });
      await store.releases.recordReleaseStep({ ...step, seq: 3, time: NOW + 2, step: "healthy" }, { version: "1.1.0", counter: 1 });
      const steps = await store.releases.listReleaseSteps("orgA", deviceA, 2);
      expect(steps.map((s) => [s.seq, s.step, s.bytesDone])).toEqual([[2, "downloading", 5], [3, "healthy", 0]]);
      expect((await store.releases.listReleaseSteps("orgA", deviceA, 10)).length).toBe(3);
      expect(await store.releases.listReleaseSteps("orgB", deviceA, 10)).toEqual([]);
      expect((await store.releases.listDeviceReleases("orgA", deviceA))[0]).toMatchObject({ currentVersion: "1.1.0", currentCounter: 1 });
    });

    it("writes steps that arrive together in shared commits, every one of them", async () => {
      await store.releases.setDesiredRelease("orgA", deviceA, release("orgA", 1), NOW);
      const step = { orgId: "orgA", deviceId: deviceA, name: "webapp", targetPath: "webapp/1/webapp.tar.gz", bytesDone: 0, bytesTotal: 0, error: "" };
      const { stats } = (store.releases as KyselyReleaseStore).steps;
      const before = { ...stats };
      await Promise.all(Array.from({ length: 40 }, (_, i) => store.releases.recordReleaseStep({ ...step, seq: 100 + i, time: NOW + i, step: "downloading", bytesDone: i })));
      expect(stats.jobs - before.jobs).toBe(40);
      expect(stats.commits - before.commits).toBeLessThan(40);
      const stored = await store.releases.listReleaseSteps("orgA", deviceA, 100);
      expect(stored.map((s) => s.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => 100 + i));
    });

    it("records control commands as desired state: run state, a restart counter that only grows, who asked; a new deployment runs again", async () => {
      const control = (action: "restart" | "stop" | "start" | "undeploy", over: { orgId?: string; name?: string; purgeData?: boolean; now?: number } = {}) =>
        store.releases.controlRelease({ orgId: "orgA", deviceId: deviceA, name: "webapp", action, purgeData: false, by: "key:alice", now: NOW + 10, ...over });
      const row = async () => (await store.releases.listDeviceReleases("orgA", deviceA))[0]!;
      expect(await control("stop")).toBe("missing");
      await store.releases.setDesiredRelease("orgA", deviceA, release("orgA", 1), NOW);
      const gen = (await store.devices.getDevice("orgA", deviceA))!.generation;
      expect(await control("stop")).toBe("ok");
      expect(await row()).toMatchObject({ runState: "stopped", restartGen: 0, controlAction: "stop", controlBy: "key:alice", controlAt: NOW + 10, reportedState: "" });
      expect((await store.devices.getDevice("orgA", deviceA))!.generation).toBe(gen + 1);
      expect(await control("restart")).toBe("ok");
      expect(await control("restart")).toBe("ok");
      expect(await row()).toMatchObject({ runState: "running", restartGen: 2, controlAction: "restart" });
      expect(await control("stop", { orgId: "orgB" })).toBe("missing");
      expect(await control("stop", { name: "other" })).toBe("missing");

      const step = { orgId: "orgA", deviceId: deviceA, name: "webapp", targetPath: "webapp/1/webapp.tar.gz", bytesDone: 0, bytesTotal: 0, error: "" };
      await store.releases.recordReleaseStep({ ...step, seq: 1, time: NOW + 2, step: "healthy" }, { version: "1.1.0", counter: 1 });
      await store.releases.recordReleaseStep({ ...step, seq: 2, time: NOW + 11, step: "restarted" }, undefined, { state: "restarted", error: "" });
      expect(await row()).toMatchObject({ reportedState: "restarted", reportedAt: NOW + 11, currentVersion: "1.1.0" });

      expect(await control("undeploy", { purgeData: true })).toBe("ok");
      expect(await row()).toMatchObject({ runState: "removed", purgeData: true, restartGen: 2 });
      expect(await control("start")).toBe("missing");
      await store.releases.recordReleaseStep({ ...step, seq: 3, time: NOW + 12, step: "removed" }, undefined, { state: "removed", error: "" });
      expect(await row()).toMatchObject({ reportedState: "removed", currentVersion: "", currentCounter: 0 });

      // Deployed again: it runs, its restart counter goes on from where it was.
      await store.releases.setDesiredRelease("orgA", deviceA, release("orgA", 1), NOW + 20);
      expect(await row()).toMatchObject({ runState: "running", purgeData: false, restartGen: 2, controlAction: "", reportedState: "" });
      expect(await control("restart")).toBe("ok");
      expect((await row()).restartGen).toBe(3);
    });
  });

  describe.skipIf(!backend.enabled)(`artifact owners migration on ${backend.name}`, () => {
    it("makes every organization with a release of an artifact its owner, since its first release", async () => {
      const fresh = await backend.fresh();
      try {
        const raw = fresh.raw();
        try {
          const { error } = await new Migrator({ db: raw, provider: migrationProvider }).migrateTo("0009_rollout_rollback");
          expect(error).toBeUndefined();
          await raw.insertInto("orgs").values([{ id: "orgA", name: "acme", created_at: NOW }, { id: "orgB", name: "globex", created_at: NOW }]).execute();
          const row = (r: ReleaseRow) => ({
            org_id: r.orgId, name: r.name, counter: r.counter, version: r.version, kind: r.kind, target_path: r.targetPath,
            sha256: r.sha256, length: r.length, meta: r.meta, created_at: r.createdAt,
          });
          const shared = { sha256: "ab".repeat(32), length: 4096 };
          await raw
            .insertInto("releases")
            .values([row(release("orgA", 1, shared)), row(release("orgA", 2, shared)), row(release("orgA", 3)), row(release("orgB", 1))])
            .execute();
        } finally {
          await raw.destroy();
        }
        const store = await fresh.open();
        try {
          expect(await store.releases.ownsArtifact("orgA", "ab".repeat(32), 4096)).toBe(true);
          expect(await store.releases.ownsArtifact("orgA", release("orgA", 3).sha256, 1003)).toBe(true);
          expect(await store.releases.ownsArtifact("orgB", release("orgB", 1).sha256, 1001)).toBe(true);
          expect(await store.releases.ownsArtifact("orgB", "ab".repeat(32), 4096)).toBe(false);
          expect(await store.releases.ownsArtifact("orgA", release("orgA", 1).sha256, 1001)).toBe(false);
        } finally {
          await store.close();
        }
        const check = fresh.raw();
        try {
          const owners = await check.selectFrom("artifact_owners").select(["org_id", "sha256", "created_at"]).orderBy("org_id").orderBy("sha256").execute();
          expect(owners.map((o) => [o.org_id, o.sha256, Number(o.created_at)])).toEqual([
            ["orgA", "33".repeat(32), NOW + 3],
            ["orgA", "ab".repeat(32), NOW + 1],
            ["orgB", "1".repeat(64), NOW + 1],
          ]);
        } finally {
          await check.destroy();
        }
      } finally {
        await fresh.drop();
      }
    });
  });
}
