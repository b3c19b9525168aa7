/**
 * The rollout state machine against the real store, on SQLite always and on PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (a fresh database per test, dropped afterwards).
 */
import { randomBytes } from "node:crypto";
import { Migrator } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { migrationProvider } from "../migrations/migrations.ts";
import { storeBackends, type StoreBackend } from "../testing.ts";
import { countDevices, type ReleaseRow, type RolloutCounts, type RolloutDeviceRow, type RolloutRow, type Store } from "../index.ts";
import { waitFor } from "@flotilla/protocol/testing";
import type { KyselyRolloutStore } from "./rollout-store.ts";
import { advance, onAdminAction, onStep, readFor, type ReleaseStepEvent } from "../../rollouts/decide.ts";

const NOW = 1_800_000_000_000;
const OFFLINE_AFTER = 10_000;


const backends = storeBackends;

/** Counters without zero entries, for comparing with a count of the devices. */
const normalCounts = (c: RolloutCounts | undefined) =>
  Object.fromEntries(Object.entries(c ?? {}).map(([w, x]) => [w, Object.fromEntries(Object.entries(x).filter(([, n]) => n !== 0))]).filter(([, x]) => Object.keys(x as object).length > 0));

function release(counter: number, version: string): ReleaseRow {
  return { orgId: "orgA", name: "webapp", counter, version, kind: "bundle", targetPath: `webapp/${counter}/webapp.tar.gz`, sha256: "a".repeat(64), length: 10, meta: "{}", createdAt: NOW };
}

function rolloutRow(id: string, over: Partial<RolloutRow["spec"]> = {}, rowOver: Partial<RolloutRow> = {}): RolloutRow {
  return {
    id,
    orgId: "orgA",
    releaseName: "webapp",
    releaseVersion: "1.5.0",
    releaseCounter: 2,
    spec: { releaseName: "webapp", releaseVersion: "1.5.0", selector: "", waves: ["1", "50%", "100%"], maxParallel: 0, failureThreshold: "", soakMs: 0, approveEachWave: false, deadlineMs: 0, ...over },
    waves: [
      { number: 1, entry: "1" },
      { number: 2, entry: "50%" },
      { number: 3, entry: "100%" },
    ],
    ineligible: [],
    status: "running",
    reason: "",
    currentWave: 1,
    waveFinishedAt: null,
    approvedWave: 1,
    toleratedFailures: 0,
    deadlineAt: null,
    createdBy: "key:test",
    createdAt: NOW,
    updatedAt: NOW,
    version: 1,
    ...rowOver,
  };
}

function step(s: string, counter = 2): ReleaseStepEvent {
  return { name: "webapp", targetPath: `webapp/${counter}/webapp.tar.gz`, step: s, bytesDone: 0, bytesTotal: 0, error: s === "failed" ? "health check failed" : "" };
}

for (const backend of backends) {
  describe.skipIf(!backend.enabled)(`rollout engine on ${backend.name}`, () => {
    let db: Awaited<ReturnType<StoreBackend["create"]>>;
    let store: Store;
    const opened: Store[] = [];
    let ids: string[];

    beforeEach(async () => {
      db = await backend.create();
      store = db.store;
      opened.push(store);
      await store.access.createOrg({ id: "orgA", name: "acme", createdAt: NOW });
      await store.devices.createJoinToken({ id: "tok1", orgId: "orgA", secretHash: "h".repeat(64), labels: {}, usesAllowed: 0, uses: 0, expiresAt: NOW + 1e9, autoApprove: true, createdAt: NOW, revokedAt: null });
      ids = [];
      for (let i = 0; i < 4; i++) {
        const r = await store.devices.enrollDevice(
          "tok1",
          { id: `dev_${i}`, publicKey: randomBytes(32).toString("base64url").slice(0, 43), name: `d${i}`, facts: {}, agentVersion: "0.1.0", capabilities: ["release:bundle"] },
          NOW,
        );
        if (!r.ok) throw new Error(r.reason);
        ids.push(r.device.id);
        await store.devices.setConnection("orgA", r.device.id, true, NOW);
      }
      await store.releases.addReleases([release(1, "1.4.0"), release(2, "1.5.0")]);
    });
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
      await db.drop();
    });

    const devicesOf = (id: string): RolloutDeviceRow[] => [
      { rolloutId: id, orgId: "orgA", deviceId: "dev_0", name: "d0", wave: 1, position: 0, state: "pending", bytesDone: 0, bytesTotal: 0, error: "", previousVersion: "", previousCounter: 0, rollbackCounter: 0, notifiedAt: null, updatedAt: NOW },
      { rolloutId: id, orgId: "orgA", deviceId: "dev_1", name: "d1", wave: 2, position: 0, state: "pending", bytesDone: 0, bytesTotal: 0, error: "", previousVersion: "", previousCounter: 0, rollbackCounter: 0, notifiedAt: null, updatedAt: NOW },
      { rolloutId: id, orgId: "orgA", deviceId: "dev_2", name: "d2", wave: 3, position: 0, state: "pending", bytesDone: 0, bytesTotal: 0, error: "", previousVersion: "", previousCounter: 0, rollbackCounter: 0, notifiedAt: null, updatedAt: NOW },
      { rolloutId: id, orgId: "orgA", deviceId: "dev_3", name: "d3", wave: 3, position: 1, state: "pending", bytesDone: 0, bytesTotal: 0, error: "", previousVersion: "", previousCounter: 0, rollbackCounter: 0, notifiedAt: null, updatedAt: NOW },
    ];
    const tick = (s: Store, id: string, now: number) => s.rollouts.transition("orgA", id, now, (s) => advance(s, now, OFFLINE_AFTER));
    const report = (s: Store, id: string, device: string, e: ReleaseStepEvent, now: number) =>
      s.rollouts.transition("orgA", id, now, (snap) => onStep(snap, device, e, now, OFFLINE_AFTER), { deviceId: device });
    const states = async (id: string) => Object.fromEntries((await store.rollouts.listRolloutDevices("orgA", id)).map((d) => [d.name, d.state]));

    it("summarizes the organization's devices: online, offline, pending, and failing by their latest rollout only", async () => {
      // dev_0..dev_3 are approved and connected (seen at NOW); dev_3 goes offline.
      await store.devices.setConnection("orgA", "dev_3", false, NOW);
      await store.devices.createJoinToken({ id: "tok2", orgId: "orgA", secretHash: "h".repeat(64), labels: {}, usesAllowed: 0, uses: 0, expiresAt: NOW + 1e9, autoApprove: false, createdAt: NOW, revokedAt: null });
      await store.devices.enrollDevice("tok2", { id: "dev_p", publicKey: randomBytes(32).toString("base64url").slice(0, 43), name: "p", facts: {}, agentVersion: "0.1.0", capabilities: [] }, NOW);
      // An older rollout failed dev_0 and dev_1; a newer one has dev_0 healthy: only dev_1 is failing.
      // Each rollout is written with its devices' end states, then completed (which releases them).
      const endedWith = async (id: string, at: number, states: Record<string, RolloutDeviceRow["state"]>) => {
        const devices = devicesOf(id).filter((d) => states[d.deviceId]).map((d) => ({ ...d, state: states[d.deviceId]! }));
        expect(await store.rollouts.createRollout(rolloutRow(id, {}, { createdAt: at }), devices)).toEqual({ ok: true });
        await store.rollouts.transition("orgA", id, at, () => ({ rollout: { status: "completed" } }));
      };
      await endedWith("ro_old", NOW, { dev_0: "failed", dev_1: "rolled-back" });
      await endedWith("ro_new", NOW + 1000, { dev_0: "healthy" });
      expect(await store.devices.summarizeDevices("orgA", NOW - 1000)).toEqual({ online: 3, offline: 1, pending: 1, failing: 1 });
      // Seen too long ago counts as offline; another organization sees none of it.
      expect(await store.devices.summarizeDevices("orgA", NOW + 1)).toEqual({ online: 0, offline: 4, pending: 1, failing: 1 });
      expect(await store.devices.summarizeDevices("orgB", 0)).toEqual({ online: 0, offline: 0, pending: 0, failing: 0 });
    });

    it("applies transitions asked for at once in their order, sharing commits, and fails only the one whose decision threw", async () => {
      expect(await store.rollouts.createRollout(rolloutRow("ro_a"), devicesOf("ro_a"))).toEqual({ ok: true });
      const { stats } = (store.rollouts as KyselyRolloutStore).transitions;
      const before = { ...stats };
      const results = await Promise.allSettled(
        Array.from({ length: 40 }, (_, i) =>
          store.rollouts.transition("orgA", "ro_a", NOW + i, (snap) => {
            if (i === 17) throw new Error("decision 17 failed");
            // Each sees the one before it: the reason grows by one mark per transition.
            return { rollout: { reason: `${snap.rollout.reason}${i},` } };
          }),
        ),
      );
      expect(results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason))).toEqual(["Error: decision 17 failed"]);
      const expected = Array.from({ length: 40 }, (_, i) => i).filter((i) => i !== 17).map((i) => `${i},`).join("");
      const row = await store.rollouts.getRollout("orgA", "ro_a");
      expect(row?.reason).toBe(expected);
      expect(row?.version).toBe(1 + 39);
      expect(stats.jobs - before.jobs).toBeGreaterThanOrEqual(40);
      expect(stats.commits - before.commits).toBeLessThan(40);
    });

    it("refuses a second rollout over a device the first still holds, writing nothing", async () => {
      expect(await store.rollouts.createRollout(rolloutRow("ro_a"), devicesOf("ro_a"))).toEqual({ ok: true });
      const second = await store.rollouts.createRollout(rolloutRow("ro_b"), devicesOf("ro_b").slice(2));
      expect(second).toEqual({ ok: false, rolloutId: "ro_a", deviceName: "d2" });
      expect(await store.rollouts.getRollout("orgA", "ro_b")).toBeUndefined();
      expect(await store.rollouts.claimOf("orgA", "dev_2")).toBe("ro_a");
    });

    it("notifies the first wave in the same transaction that sets its desired release, and never twice", async () => {
      await store.rollouts.createRollout(rolloutRow("ro_a"), devicesOf("ro_a"));
      const gen = (await store.devices.getDevice("orgA", "dev_0"))!.generation;
      expect((await tick(store, "ro_a", NOW + 1))?.changed).toBe(true);
      expect(await states("ro_a")).toEqual({ d0: "notified", d1: "pending", d2: "pending", d3: "pending" });
      const desired = await store.releases.listDeviceReleases("orgA", "dev_0");
      expect(desired.map((r) => r.desiredCounter)).toEqual([2]);
      expect((await store.devices.getDevice("orgA", "dev_0"))!.generation).toBe(gen + 1);

      // As after a restart: the same database, another store, the same transition again.
      const again = await db.reopen();
      opened.push(again);
      expect((await tick(again, "ro_a", NOW + 2))?.changed).toBe(false);
      expect((await store.devices.getDevice("orgA", "dev_0"))!.generation).toBe(gen + 1);
    });

    it("advances wave by wave after the soak time, and completes and frees its devices", async () => {
      await store.rollouts.createRollout(rolloutRow("ro_a", { soakMs: 60_000 }), devicesOf("ro_a"));
      await tick(store, "ro_a", NOW);
      await report(store, "ro_a", "dev_0", step("downloading"), NOW + 1);
      await report(store, "ro_a", "dev_0", step("healthy"), NOW + 2);
      expect((await store.rollouts.getRollout("orgA", "ro_a"))?.waveFinishedAt).toBe(NOW + 2);
      expect((await states("ro_a")).d1).toBe("pending");
      await tick(store, "ro_a", NOW + 60_001);
      expect((await states("ro_a")).d1).toBe("pending");
      for (const id of ids) await store.devices.setConnection("orgA", id, true, NOW + 60_002);
      await tick(store, "ro_a", NOW + 60_002);
      expect(await states("ro_a")).toMatchObject({ d0: "healthy", d1: "notified", d2: "pending" });
      await report(store, "ro_a", "dev_1", step("healthy"), NOW + 60_003);
      for (const id of ids) await store.devices.setConnection("orgA", id, true, NOW + 120_003);
      await tick(store, "ro_a", NOW + 120_003);
      expect(await states("ro_a")).toMatchObject({ d2: "notified", d3: "notified" });
      await report(store, "ro_a", "dev_2", step("healthy"), NOW + 120_004);
      const done = await report(store, "ro_a", "dev_3", step("healthy"), NOW + 120_005);
      expect(done?.rollout.status).toBe("completed");
      expect(await store.rollouts.claimOf("orgA", "dev_3")).toBeUndefined();
    });

    it("pauses past the failure threshold and notifies no one else", async () => {
      const row = rolloutRow("ro_a", {}, { waves: [{ number: 1, entry: "100%" }] });
      await store.rollouts.createRollout(row, devicesOf("ro_a").map((d) => ({ ...d, wave: 1 })));
      await store.rollouts.transition("orgA", "ro_a", NOW, (s) => advance({ ...s, rollout: { ...s.rollout, spec: { ...s.rollout.spec, maxParallel: 2 } } }, NOW, OFFLINE_AFTER));
      expect(Object.values(await states("ro_a")).filter((s) => s === "notified")).toHaveLength(2);
      const paused = await report(store, "ro_a", "dev_0", step("failed"), NOW + 1);
      expect(paused?.rollout.status).toBe("paused");
      expect(paused?.rollout.reason).toMatch(/failure threshold crossed: 1 of 4/);
      await tick(store, "ro_a", NOW + 2);
      expect(await states("ro_a")).toEqual({ d0: "failed", d1: "notified", d2: "pending", d3: "pending" });
    });

    it("keeps a slot of max-parallel for a device that went offline while installing, so devices coming back never exceed it", async () => {
      const row = rolloutRow("ro_a", { maxParallel: 2 }, { waves: [{ number: 1, entry: "100%" }] });
      await store.rollouts.createRollout(row, devicesOf("ro_a").map((d) => ({ ...d, wave: 1 })));
      await tick(store, "ro_a", NOW);
      expect(await states("ro_a")).toEqual({ d0: "notified", d1: "notified", d2: "pending", d3: "pending" });
      await store.devices.setConnection("orgA", "dev_0", false, NOW + 1);
      await tick(store, "ro_a", NOW + 2);
      expect(await states("ro_a")).toEqual({ d0: "notified", d1: "notified", d2: "pending", d3: "pending" });
      await store.devices.setConnection("orgA", "dev_0", true, NOW + 3);
      await report(store, "ro_a", "dev_0", step("healthy"), NOW + 4);
      expect(await states("ro_a")).toEqual({ d0: "healthy", d1: "notified", d2: "notified", d3: "pending" });
    });

    it("skips devices still offline at the deadline", async () => {
      await store.devices.setConnection("orgA", "dev_3", false, NOW);
      const row = rolloutRow("ro_a", {}, { waves: [{ number: 1, entry: "100%" }], deadlineAt: NOW + 1000 });
      await store.rollouts.createRollout(row, devicesOf("ro_a").map((d) => ({ ...d, wave: 1 })));
      await tick(store, "ro_a", NOW);
      for (const id of ["dev_0", "dev_1", "dev_2"]) await report(store, "ro_a", id, step("healthy"), NOW + 1);
      expect((await states("ro_a")).d3).toBe("pending");
      const done = await tick(store, "ro_a", NOW + 1000);
      expect(done?.rollout.status).toBe("completed");
      expect((await states("ro_a")).d3).toBe("skipped");
      expect(await store.releases.listDeviceReleases("orgA", "dev_3")).toEqual([]);
    });

    it("with approve-each-wave, holds a finished wave until it is approved", async () => {
      await store.rollouts.createRollout(rolloutRow("ro_a", { approveEachWave: true }), devicesOf("ro_a"));
      await tick(store, "ro_a", NOW);
      await report(store, "ro_a", "dev_0", step("healthy"), NOW + 1);
      await tick(store, "ro_a", NOW + 2);
      expect((await states("ro_a")).d1).toBe("pending");
      const act = (a: Parameters<typeof onAdminAction>[1], now: number) =>
        store.rollouts.transition("orgA", "ro_a", now, (s) => onAdminAction(s, a, now, OFFLINE_AFTER), readFor(a));
      const approved = await act({ kind: "approve" }, NOW + 3);
      expect(approved?.rollout.approvedWave).toBe(2);
      expect(approved?.rollout.currentWave).toBe(2);
      expect((await states("ro_a")).d1).toBe("notified");
      // The next wave may be approved ahead, while the current one still runs; only once.
      expect((await act({ kind: "approve" }, NOW + 4))?.rollout.approvedWave).toBe(3);
      expect((await states("ro_a")).d2).toBe("pending");
      await expect(act({ kind: "approve" }, NOW + 5)).rejects.toThrow(/wave 3 is already approved/);
    });

    it("notifies no one while paused, and continues on resume accepting the failures so far", async () => {
      const row = rolloutRow("ro_a", { maxParallel: 1 }, { waves: [{ number: 1, entry: "100%" }] });
      await store.rollouts.createRollout(row, devicesOf("ro_a").map((d) => ({ ...d, wave: 1 })));
      const act = (a: Parameters<typeof onAdminAction>[1], now: number) =>
        store.rollouts.transition("orgA", "ro_a", now, (s) => onAdminAction(s, a, now, OFFLINE_AFTER), readFor(a));
      await tick(store, "ro_a", NOW);
      const paused = await report(store, "ro_a", "dev_0", step("failed"), NOW + 1);
      expect(paused?.rollout.status).toBe("paused");
      await tick(store, "ro_a", NOW + 2);
      expect(await states("ro_a")).toEqual({ d0: "failed", d1: "pending", d2: "pending", d3: "pending" });
      await expect(act({ kind: "pause", by: "key:test" }, NOW + 3)).rejects.toThrow(/already paused/);
      const resumed = await act({ kind: "resume" }, NOW + 4);
      expect(resumed?.rollout.status).toBe("running");
      expect(resumed?.rollout.toleratedFailures).toBe(1);
      expect(await states("ro_a")).toMatchObject({ d0: "failed", d1: "notified" });
    });

    it("skips a device decommissioned after the plan instead of notifying it", async () => {
      await store.devices.updateDevice("orgA", "dev_0", { lifecycle: "decommissioned" }, NOW);
      await store.rollouts.createRollout(rolloutRow("ro_a"), devicesOf("ro_a"));
      await tick(store, "ro_a", NOW + 1);
      expect((await states("ro_a")).d0).toBe("skipped");
      expect(await store.releases.listDeviceReleases("orgA", "dev_0")).toEqual([]);
    });

    it("on abort with roll-back returns devices that took the release through a re-signed copy, and holds them until they report it", async () => {
      await store.releases.addReleases([release(3, "1.4.0")]);
      for (const id of ["dev_0", "dev_1", "dev_2"]) {
        await store.releases.setDesiredRelease("orgA", id, release(1, "1.4.0"), NOW);
        await store.releases.recordReleaseStep({ orgId: "orgA", deviceId: id, seq: 1, time: NOW, name: "webapp", targetPath: "webapp/1/webapp.tar.gz", step: "healthy", bytesDone: 0, bytesTotal: 0, error: "" }, { version: "1.4.0", counter: 1 });
      }
      const row = rolloutRow("ro_a", {}, { waves: [{ number: 1, entry: "100%" }], toleratedFailures: 4 });
      await store.rollouts.createRollout(row, devicesOf("ro_a").map((d) => ({ ...d, wave: 1 })));
      await tick(store, "ro_a", NOW);
      await report(store, "ro_a", "dev_0", step("healthy"), NOW + 1);
      await report(store, "ro_a", "dev_1", step("failed"), NOW + 1);
      await report(store, "ro_a", "dev_2", { ...step("downloading"), bytesDone: 5, bytesTotal: 10 }, NOW + 1);
      expect(await states("ro_a")).toEqual({ d0: "healthy", d1: "failed", d2: "downloading", d3: "notified" });
      const desired = async (id: string) => (await store.releases.listDeviceReleases("orgA", id))[0]?.desiredCounter;
      const abort = (returnTo: Map<number, number>, now: number) =>
        store.rollouts.transition("orgA", "ro_a", now, (s) => onAdminAction(s, { kind: "abort", rollBack: true, by: "key:test", returnTo }, now, OFFLINE_AFTER), { allDevices: true });

      // Without a copy of #1 signed above #2 the agents would refuse to go back: refused, nothing written.
      await expect(abort(new Map(), NOW + 2)).rejects.toThrow(/webapp 1\.4\.0 \(#1\) must be signed again with a higher counter/);
      expect((await store.rollouts.getRollout("orgA", "ro_a"))?.status).toBe("running");
      expect(await desired("dev_0")).toBe(2);

      const aborted = await abort(new Map([[1, 3]]), NOW + 3);
      expect(aborted?.rollout.status).toBe("aborted");
      expect(aborted?.rollout.reason).toBe("aborted by key:test; 2 devices returning to their previous release");
      expect(await states("ro_a")).toEqual({ d0: "rolling-back", d1: "failed", d2: "rolling-back", d3: "notified" });
      // The healthy and the installing device install the copy; the failed one, still on #1,
      // only wants #1 again; the one that ran nothing before keeps the new release.
      expect([await desired("dev_0"), await desired("dev_1"), await desired("dev_2"), await desired("dev_3")]).toEqual([3, 1, 3, 2]);
      expect((await store.rollouts.listRolloutDevices("orgA", "ro_a")).map((d) => d.rollbackCounter)).toEqual([3, 0, 3, 0]);
      expect(await store.rollouts.claimOf("orgA", "dev_0")).toBe("ro_a");
      expect(await store.rollouts.claimOf("orgA", "dev_1")).toBeUndefined();
      expect(await store.rollouts.createRollout(rolloutRow("ro_b"), devicesOf("ro_b"))).toEqual({ ok: false, rolloutId: "ro_a", deviceName: "d0" });

      // A step of the rollout's own release no longer moves a returning device.
      await report(store, "ro_a", "dev_0", step("healthy"), NOW + 4);
      expect((await states("ro_a")).d0).toBe("rolling-back");
      await report(store, "ro_a", "dev_0", step("healthy", 3), NOW + 5);
      await report(store, "ro_a", "dev_2", step("failed", 3), NOW + 5);
      const after = await store.rollouts.listRolloutDevices("orgA", "ro_a");
      expect(after.map((d) => [d.state, d.error])).toEqual([
        ["rolled-back", "returned to 1.4.0 (#3)"],
        ["failed", "health check failed"],
        ["failed", "returning to 1.4.0 (#3) failed: health check failed"],
        ["notified", ""],
      ]);
      for (const id of ids) expect(await store.rollouts.claimOf("orgA", id), id).toBeUndefined();
      expect((await store.rollouts.getRollout("orgA", "ro_a"))?.status).toBe("aborted");
    });

    it("on abort with roll-back uses an earlier release signed with allowDowngrade as it is", async () => {
      await store.releases.setDesiredRelease("orgA", "dev_0", release(1, "1.4.0"), NOW);
      await store.releases.recordReleaseStep({ orgId: "orgA", deviceId: "dev_0", seq: 1, time: NOW, name: "webapp", targetPath: "webapp/1/webapp.tar.gz", step: "healthy", bytesDone: 0, bytesTotal: 0, error: "" }, { version: "1.4.0", counter: 1 });
      await store.rollouts.createRollout(rolloutRow("ro_a"), devicesOf("ro_a"));
      await tick(store, "ro_a", NOW);
      await report(store, "ro_a", "dev_0", step("healthy"), NOW + 1);
      const aborted = await store.rollouts.transition("orgA", "ro_a", NOW + 2, (snap) =>
        onAdminAction(snap, { kind: "abort", rollBack: true, by: "key:test", returnTo: new Map([[1, 1]]) }, NOW + 2, OFFLINE_AFTER),
        { allDevices: true },
      );
      expect(aborted?.rollout.status).toBe("aborted");
      expect((await store.releases.listDeviceReleases("orgA", "dev_0"))[0]?.desiredCounter).toBe(1);
      expect((await states("ro_a")).d0).toBe("rolling-back");
      await report(store, "ro_a", "dev_0", step("healthy", 1), NOW + 3);
      expect((await states("ro_a")).d0).toBe("rolled-back");
      expect(await store.rollouts.claimOf("orgA", "dev_0")).toBeUndefined();
    });

    const normal = normalCounts;
    const recount = async (s: Store, id: string) => normal(countDevices(await s.rollouts.listRolloutDevices("orgA", id)));

    it("keeps the wave counters equal to a count of the devices through notification, steps from two stores, and a deadline", async () => {
      await store.devices.setConnection("orgA", "dev_3", false, NOW);
      const row = rolloutRow("ro_a", {}, { waves: [{ number: 1, entry: "1" }, { number: 2, entry: "100%" }], deadlineAt: NOW + 1000, toleratedFailures: 4 });
      await store.rollouts.createRollout(row, devicesOf("ro_a").map((d) => ({ ...d, wave: d.deviceId === "dev_0" ? 1 : 2 })));
      expect(normal(await store.rollouts.rolloutCounts("orgA", "ro_a"))).toEqual({ 1: { pending: 1 }, 2: { pending: 3 } });
      await tick(store, "ro_a", NOW);
      await report(store, "ro_a", "dev_0", step("healthy"), NOW + 1);
      expect(normal(await store.rollouts.rolloutCounts("orgA", "ro_a"))).toEqual({ 1: { healthy: 1 }, 2: { notified: 2, pending: 1 } });
      // Another store on the same database (another replica) continues from the same counters.
      const other = await db.reopen();
      opened.push(other);
      await report(other, "ro_a", "dev_1", step("failed"), NOW + 2);
      await report(store, "ro_a", "dev_2", { ...step("downloading"), bytesDone: 5, bytesTotal: 10 }, NOW + 3);
      expect(normal(await other.rollouts.rolloutCounts("orgA", "ro_a"))).toEqual(await recount(other, "ro_a"));
      expect(normal(await store.rollouts.rolloutCounts("orgA", "ro_a"))).toEqual({ 1: { healthy: 1 }, 2: { failed: 1, downloading: 1, pending: 1 } });
      const done = await tick(other, "ro_a", NOW + 1000);
      expect(done?.rollout.status).toBe("completed");
      expect(done?.rollout.reason).toBe("1 healthy, 1 failed, 2 skipped");
      expect(normal(await store.rollouts.rolloutCounts("orgA", "ro_a"))).toEqual({ 1: { healthy: 1 }, 2: { failed: 1, skipped: 2 } });
      expect(normal(await store.rollouts.rolloutCounts("orgA", "ro_a"))).toEqual(await recount(store, "ro_a"));
    });

    it("pages a rollout's devices in order from a key, each once, also of one state or one wave, and counts them all without listing them", async () => {
      // 3 waves of 9, 10 and 11 devices; every fourth failed; two devices share a plan position
      // (so the order falls back to the device id); a second rollout's devices never show up.
      const many: RolloutDeviceRow[] = [];
      for (let i = 0; i < 30; i++) {
        const wave = i < 9 ? 1 : i < 19 ? 2 : 3;
        const position = i === 13 ? 12 - 9 : i - (wave === 1 ? 0 : wave === 2 ? 9 : 19);
        many.push({ ...devicesOf("ro_p")[0]!, deviceId: `pg_${String(29 - i).padStart(2, "0")}`, name: `n${i}`, wave, position, state: i % 4 === 0 ? "failed" : "pending" });
      }
      expect(await store.rollouts.createRollout(rolloutRow("ro_p"), many)).toEqual({ ok: true });
      expect(await store.rollouts.createRollout(rolloutRow("ro_q"), devicesOf("ro_q"))).toEqual({ ok: true });
      const key = (d: RolloutDeviceRow) => `${d.wave}.${d.position}.${d.deviceId}`;
      const all = await store.rollouts.listRolloutDevices("orgA", "ro_p");
      expect(all).toHaveLength(30);
      const order = [...all].sort((a, b) => a.wave - b.wave || a.position - b.position || (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0));
      expect(all.map(key)).toEqual(order.map(key));
      expect(all.filter((d) => d.wave === 2 && d.position === 3).map((d) => d.deviceId)).toEqual(["pg_16", "pg_17"]);

      const pages = async (filter: { state?: "failed"; wave?: number }, limit: number) => {
        const seen: RolloutDeviceRow[] = [];
        let after: RolloutDeviceRow | undefined;
        for (;;) {
          const page = await store.rollouts.listRolloutDevices("orgA", "ro_p", { limit, ...filter, ...(after ? { after } : {}) });
          expect(page.length).toBeLessThanOrEqual(limit);
          seen.push(...page);
          after = page.at(-1);
          if (page.length < limit || !after) return seen;
        }
      };
      for (const limit of [1, 4, 7, 30]) expect((await pages({}, limit)).map(key), `pages of ${limit}`).toEqual(all.map(key));
      expect((await pages({ state: "failed" }, 3)).map(key)).toEqual(all.filter((d) => d.state === "failed").map(key));
      expect((await pages({ wave: 2 }, 3)).map(key)).toEqual(all.filter((d) => d.wave === 2).map(key));
      expect(await store.rollouts.listRolloutDevices("orgB", "ro_p", { limit: 10 })).toEqual([]);

      // The counts are the rollout's counters, equal to a count of the devices, whatever a page shows.
      expect(normal(await store.rollouts.rolloutCounts("orgA", "ro_p"))).toEqual({ 1: { failed: 3, pending: 6 }, 2: { failed: 2, pending: 8 }, 3: { failed: 3, pending: 8 } });
      expect(normal(await store.rollouts.rolloutCounts("orgA", "ro_p"))).toEqual(await recount(store, "ro_p"));
    });

    it("wakes every device a wave start notifies, after commit, and not the ones it does not", async () => {
      await store.devices.setConnection("orgA", "dev_3", false, NOW);
      const woken: string[] = [];
      const stop = store.devices.onDeviceChange((_org, id) => void woken.push(id));
      try {
        await store.rollouts.createRollout(rolloutRow("ro_a", {}, { waves: [{ number: 1, entry: "100%" }] }), devicesOf("ro_a").map((d) => ({ ...d, wave: 1 })));
        await tick(store, "ro_a", NOW);
        expect(await states("ro_a")).toEqual({ d0: "notified", d1: "notified", d2: "notified", d3: "pending" });
        await waitFor("three devices woken", () => woken.length >= 3);
        expect(woken.sort()).toEqual(["dev_0", "dev_1", "dev_2"]);
        for (const id of ["dev_0", "dev_1", "dev_2"]) expect((await store.releases.listDeviceReleases("orgA", id)).map((r) => r.desiredCounter)).toEqual([2]);
      } finally {
        stop();
      }
    });
  });

  describe.skipIf(!backend.enabled)(`rollout counters migration on ${backend.name}`, () => {
    it("counts the devices of every rollout created before it, by wave and state", async () => {
      const fresh = await backend.fresh();
      try {
        const raw = fresh.raw();
        try {
          const { error } = await new Migrator({ db: raw, provider: migrationProvider }).migrateTo("0014_device_control");
          expect(error).toBeUndefined();
          await raw.insertInto("orgs").values({ id: "orgA", name: "acme", created_at: NOW }).execute();
          const r = rolloutRow("ro_old");
          await raw
            .insertInto("rollouts")
            .values({
              id: r.id, org_id: r.orgId, release_name: r.releaseName, release_version: r.releaseVersion, release_counter: r.releaseCounter, spec: JSON.stringify(r.spec),
              waves: JSON.stringify(r.waves), ineligible: "[]", status: "running", reason: "", current_wave: 2, wave_finished_at: null, approved_wave: 1,
              tolerated_failures: 0, deadline_at: null, created_by: r.createdBy, created_at: NOW, updated_at: NOW, version: 3,
            })
            .execute();
          const dev = (id: string, wave: number, state: string) => ({
            rollout_id: "ro_old", org_id: "orgA", device_id: id, name: id, wave, position: 0, state, bytes_done: 0, bytes_total: 0, error: "",
            previous_version: "", previous_counter: 0, rollback_counter: 0, notified_at: null, updated_at: NOW,
          });
          await raw.insertInto("rollout_devices").values([dev("a", 1, "healthy"), dev("b", 2, "downloading"), dev("c", 2, "pending"), dev("d", 2, "pending")]).execute();
        } finally {
          await raw.destroy();
        }
        const migrated = await fresh.open();
        try {
          expect(normalCounts(await migrated.rollouts.rolloutCounts("orgA", "ro_old"))).toEqual({ 1: { healthy: 1 }, 2: { downloading: 1, pending: 2 } });
        } finally {
          await migrated.close();
        }
      } finally {
        await fresh.drop();
      }
    });
  });
}
