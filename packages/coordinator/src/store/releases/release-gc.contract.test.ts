/**
 * The store's part of `release rm` and garbage collection: who needs a release, removing it,
 * and what no release needs (artifacts, NAR files, store paths), with the storage charge given
 * back. On SQLite always and on PostgreSQL when FLOTILLA_TEST_POSTGRES_URL is set.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "@flotilla/protocol/testing";
import { storeBackends } from "../testing.ts";
import { type NixPathRow, type ReleaseRow, type RolloutDeviceRow, type RolloutRow, type Store } from "../index.ts";

const NOW = 1_800_000_000_000;

function release(orgId: string, counter: number, over: Partial<ReleaseRow> = {}): ReleaseRow {
  return {
    orgId, name: "webapp", counter, version: `1.${counter}.0`, kind: "bundle", targetPath: `webapp/${counter}/webapp.tar.gz`,
    sha256: String(counter).repeat(64).slice(0, 64), length: 1000 + counter, meta: "{}", createdAt: NOW + counter, ...over,
  };
}

function rollout(id: string, counter: number, status = "running"): RolloutRow {
  return {
    id, orgId: "orgA", releaseName: "webapp", releaseVersion: `1.${counter}.0`, releaseCounter: counter,
    spec: { releaseName: "webapp", releaseVersion: `1.${counter}.0`, selector: "", waves: ["100%"], maxParallel: 0, failureThreshold: "", soakMs: 0, approveEachWave: false, deadlineMs: 0 },
    waves: [{ number: 1, entry: "100%" }], ineligible: [], status: status as RolloutRow["status"], reason: "", currentWave: 1, waveFinishedAt: null, approvedWave: 1,
    toleratedFailures: 0, deadlineAt: null, createdBy: "key:test", createdAt: NOW, updatedAt: NOW, version: 1,
  };
}

function rolloutDevice(rolloutId: string, deviceId: string, name: string, previousCounter: number): RolloutDeviceRow {
  return { rolloutId, orgId: "orgA", deviceId, name, wave: 1, position: 0, state: "pending", bytesDone: 0, bytesTotal: 0, error: "", previousVersion: `1.${previousCounter}.0`, previousCounter, rollbackCounter: 0, notifiedAt: null, updatedAt: NOW };
}

const h = (c: string) => c.repeat(32);
function nixPath(orgId: string, hashPart: string, refs: string[], fileHash: string, createdAt = NOW): NixPathRow {
  return { orgId, hashPart, storePath: `/nix/store/${hashPart}-p`, fileHash, fileSize: 10, narHash: fileHash, narSize: 10, references: refs.map((r) => `${r}-p`), deriver: "", sigs: [], ca: "", createdAt };
}

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`release removal and garbage queries on ${backend.name}`, () => {
    let store: Store;
    let drop: () => Promise<void>;
    const ids: Record<string, string> = {};

    beforeEach(async () => {
      ({ store, drop } = await backend.create());
      await store.access.createOrg({ id: "orgA", name: "acme", createdAt: NOW });
      await store.access.createOrg({ id: "orgB", name: "globex", createdAt: NOW });
      await store.devices.createJoinToken({
        id: "tokA", orgId: "orgA", secretHash: "h", labels: {}, usesAllowed: 10, uses: 0, expiresAt: NOW * 2, autoApprove: true, createdAt: NOW, revokedAt: null,
      });
      for (const name of ["runs", "told", "idle"]) {
        const r = await store.devices.enrollDevice("tokA", { id: `dev_${name}`, publicKey: name.padEnd(43, "p"), name, facts: {}, agentVersion: "0.1.0", capabilities: [] }, NOW);
        if (!r.ok) throw new Error(r.reason);
        ids[name] = r.device.id;
      }
    });
    afterEach(async () => {
      await store.close();
      await drop();
    });

    it("names the devices that run a release, those told to run it, and the rollouts that take it", async () => {
      await store.releases.addReleases([release("orgA", 1), release("orgA", 2), release("orgA", 3)]);
      await store.releases.setDesiredRelease("orgA", ids.runs!, release("orgA", 2), NOW);
      await store.releases.recordReleaseStep(
        { orgId: "orgA", deviceId: ids.runs!, seq: 1, time: NOW, name: "webapp", targetPath: "webapp/2/webapp.tar.gz", step: "healthy", bytesDone: 0, bytesTotal: 0, error: "" },
        { version: "1.2.0", counter: 2 },
      );
      await store.releases.setDesiredRelease("orgA", ids.told!, release("orgA", 2), NOW);
      expect(await store.releases.releaseUsers("orgA", "webapp", 2)).toEqual({ running: ["runs"], told: ["told"], rollouts: [] });
      expect(await store.releases.releaseUsers("orgA", "webapp", 1)).toEqual({ running: [], told: [], rollouts: [] });
      expect(await store.releases.releaseUsers("orgB", "webapp", 2)).toEqual({ running: [], told: [], rollouts: [] });
      // A running rollout of 3 takes 3, and 1 too: the release its device would return to.
      expect(await store.rollouts.createRollout(rollout("ro_1", 3), [rolloutDevice("ro_1", ids.idle!, "idle", 1)])).toEqual({ ok: true });
      expect((await store.releases.releaseUsers("orgA", "webapp", 3)).rollouts).toEqual(["ro_1"]);
      expect((await store.releases.releaseUsers("orgA", "webapp", 1)).rollouts).toEqual(["ro_1"]);
      expect((await store.releases.releaseUsers("orgA", "webapp", 2)).rollouts).toEqual([]);
    });

    it("removes a release: devices told to run it are told to run what they run, devices running it keep it", async () => {
      await store.releases.addReleases([release("orgA", 1), release("orgA", 2)]);
      const step = (deviceId: string, counter: number) =>
        store.releases.recordReleaseStep(
          { orgId: "orgA", deviceId, seq: counter, time: NOW, name: "webapp", targetPath: `webapp/${counter}/webapp.tar.gz`, step: "healthy", bytesDone: 0, bytesTotal: 0, error: "" },
          { version: `1.${counter}.0`, counter },
        );
      await store.releases.setDesiredRelease("orgA", ids.runs!, release("orgA", 2), NOW);
      await step(ids.runs!, 2);
      await store.releases.setDesiredRelease("orgA", ids.told!, release("orgA", 1), NOW);
      await step(ids.told!, 1);
      await store.releases.setDesiredRelease("orgA", ids.told!, release("orgA", 2), NOW);
      await store.releases.setDesiredRelease("orgA", ids.idle!, release("orgA", 2), NOW);
      const generation = (await store.devices.getDevice("orgA", ids.told!))!.generation;
      const runsGeneration = (await store.devices.getDevice("orgA", ids.runs!))!.generation;
      const seen: string[] = [];
      const off = store.devices.onDeviceChange((_org, id) => seen.push(id));

      expect(await store.releases.removeRelease("orgB", "webapp", 2, NOW + 5)).toBe(false);
      expect(await store.releases.removeRelease("orgA", "webapp", 2, NOW + 5)).toEqual(["idle", "told"]);
      // PostgreSQL delivers its notifications a moment after the commit.
      await waitFor("both devices notified", async () => seen.includes(ids.told!) && seen.includes(ids.idle!), 5000, 20);
      off();
      expect(await store.releases.getRelease("orgA", "webapp", 2)).toBeUndefined();
      expect(await store.releases.getRelease("orgA", "webapp", 1)).toBeDefined();
      const desired = async (id: string) => (await store.releases.listDeviceReleases("orgA", id)).map((r) => [r.desiredCounter, r.currentCounter]);
      expect(await desired(ids.runs!)).toEqual([[2, 2]]);
      expect(await desired(ids.told!)).toEqual([[1, 1]]);
      // It ran nothing of this name: nothing is desired any more.
      expect(await desired(ids.idle!)).toEqual([]);
      expect((await store.devices.getDevice("orgA", ids.told!))!.generation).toBe(generation + 1);
      expect((await store.devices.getDevice("orgA", ids.runs!))!.generation).toBe(runsGeneration);
      expect(await store.releases.removeRelease("orgA", "webapp", 2, NOW + 6)).toBe(false);
      // What it was is kept, and its counter is never given again.
      expect((await store.releases.listRemovedReleases("orgA")).map((r) => [r.name, r.counter, r.targetPath, r.sha256])).toEqual([["webapp", 2, "webapp/2/webapp.tar.gz", release("orgA", 2).sha256]]);
      expect(await store.releases.listRemovedReleases("orgA", "other")).toEqual([]);
      expect(await store.releases.listRemovedReleases("orgB")).toEqual([]);
      expect(await store.releases.highestCounter("orgA", "webapp")).toBe(2);
      expect(await store.releases.removeRelease("orgA", "webapp", 1, NOW + 7)).toEqual([]);
      expect(await store.releases.listReleases("orgA")).toEqual([]);
      expect(await store.releases.highestCounter("orgA", "webapp")).toBe(2);
      expect(await store.releases.highestCounter("orgB", "webapp")).toBe(0);
      // A removed release's artifact is needed by nothing.
      expect(await store.releases.artifactNeeded(release("orgA", 2).sha256)).toBe(false);
    });

    it("finds uploaded artifacts no release of the organization names, older than a time, and forgets them", async () => {
      const [released, unreleased, young, shared] = ["a", "b", "c", "d"].map((c) => c.repeat(64)) as [string, string, string, string];
      await store.releases.recordArtifactOwner("orgA", released, 1, NOW);
      await store.releases.recordArtifactOwner("orgA", unreleased, 2, NOW);
      await store.releases.recordArtifactOwner("orgA", young, 3, NOW + 100);
      await store.releases.recordArtifactOwner("orgA", shared, 4, NOW);
      await store.releases.recordArtifactOwner("orgB", shared, 4, NOW);
      await store.releases.addReleases([release("orgA", 1, { sha256: released, length: 1 }), release("orgB", 1, { sha256: shared, length: 4 })]);
      const found = await store.releases.unreleasedArtifacts("orgA", NOW + 50, 100);
      expect(found.map((a) => [a.sha256, a.length]).sort()).toEqual([[unreleased, 2], [shared, 4]].sort());
      expect(await store.releases.unreleasedArtifacts("orgA", NOW + 50, 1)).toHaveLength(1);
      expect(await store.releases.unreleasedArtifacts("orgB", NOW + 50, 100)).toEqual([]);

      expect(await store.releases.dropArtifactOwner("orgA", released)).toBe(false);
      expect(await store.releases.dropArtifactOwner("orgA", unreleased)).toBe(true);
      expect(await store.releases.dropArtifactOwner("orgA", shared)).toBe(true);
      expect(await store.releases.ownsArtifact("orgA", unreleased, 2)).toBe(false);
      expect(await store.releases.artifactNeeded(unreleased)).toBe(false);
      expect(await store.releases.artifactNeeded(shared)).toBe(true);
      expect(await store.releases.artifactNeeded(released)).toBe(true);
      expect(await store.releases.artifactNeeded(released, "orgA")).toBe(false);
      expect(await store.releases.artifactNeeded(shared, "orgA")).toBe(true);
    });

    it("lists an organization's path links, deletes paths, and finds NAR files none of its paths is stored in", async () => {
      const [f1, f2, f3] = ["1", "2", "3"].map((c) => c.repeat(64)) as [string, string, string];
      await store.nix.addPath(nixPath("orgA", h("a"), [h("b")], f1));
      await store.nix.addPath(nixPath("orgA", h("b"), [], f2));
      await store.nix.addPath(nixPath("orgB", h("c"), [], f2));
      for (const f of [f1, f2, f3]) await store.nix.recordNar("orgA", f, NOW);
      await store.nix.recordNar("orgB", f2, NOW);
      await store.nix.recordNar("orgB", f3, NOW + 100);
      expect((await store.nix.listPathLinks("orgA")).map((l) => [l.hashPart, l.references, l.fileHash]).sort()).toEqual(
        [[h("a"), [`${h("b")}-p`], f1], [h("b"), [], f2]].sort(),
      );
      expect(await store.nix.unusedNars("orgA", NOW + 1, 100)).toEqual([f3]);
      expect(await store.nix.unusedNars("orgB", NOW + 1, 100)).toEqual([]);
      expect(await store.nix.deletePaths("orgA", [h("a"), h("c")])).toBe(1);
      expect((await store.nix.getPath("orgB", h("c")))?.fileHash).toBe(f2);
      expect(await store.nix.unusedNars("orgA", NOW + 1, 100)).toEqual(expect.arrayContaining([f1, f3]));
      expect(await store.nix.dropNar("orgA", f2)).toBe(false);
      expect(await store.nix.dropNar("orgA", f1)).toBe(true);
      expect(await store.nix.narNeeded(f1)).toBe(false);
      expect(await store.nix.narNeeded(f2)).toBe(true);
      expect(await store.nix.narNeeded(f3)).toBe(true);
      expect(await store.nix.narNeeded(f3, "orgA")).toBe(true);
      expect(await store.nix.narNeeded(f1, "orgB")).toBe(false);
    });

    it("gives an object's charge back once, and nothing for an object not charged", async () => {
      await store.storage.reserve("orgA", "artifact:x:600", 600, null, NOW);
      await store.storage.commit("orgA", "artifact:x:600", { kind: "artifact", key: "x", bytes: 600 }, NOW);
      await store.storage.commit("orgA", "nar:t", { kind: "nar", key: "x", bytes: 50 }, NOW);
      expect(await store.storage.usage("orgA")).toEqual({ usedBytes: 650, reservedBytes: 0 });
      expect(await store.storage.uncharge("orgB", "artifact", "x")).toBe(0);
      expect(await store.storage.uncharge("orgA", "artifact", "x")).toBe(600);
      expect(await store.storage.uncharge("orgA", "artifact", "x")).toBe(0);
      expect(await store.storage.usage("orgA")).toEqual({ usedBytes: 50, reservedBytes: 0 });
      expect(await store.storage.charged("orgA", "nar", "x")).toBe(true);
      // Charged again later, it counts again.
      await store.storage.commit("orgA", "artifact:x:600", { kind: "artifact", key: "x", bytes: 600 }, NOW);
      expect(await store.storage.usage("orgA")).toEqual({ usedBytes: 650, reservedBytes: 0 });
    });
  });
}
