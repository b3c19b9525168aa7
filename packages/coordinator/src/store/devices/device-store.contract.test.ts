/**
 * The device store's contract, on SQLite always and on PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each test in a fresh database, dropped afterwards).
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { storeBackends, storeForEachTest } from "../testing.ts";
import { StoreConflictError, type JoinTokenRow, type NewDevice } from "../index.ts";
import type { KyselyDeviceStore } from "./device-store.ts";

const NOW = 1_800_000_000_000;

function token(orgId: string, over: Partial<JoinTokenRow> = {}): JoinTokenRow {
  return {
    id: `tok${randomBytes(4).toString("hex")}`,
    orgId,
    secretHash: "h".repeat(64),
    labels: { env: "prod" },
    usesAllowed: 2,
    uses: 0,
    expiresAt: NOW + 3_600_000,
    autoApprove: false,
    createdAt: NOW,
    revokedAt: null,
    ...over,
  };
}

function device(over: Partial<NewDevice> = {}): NewDevice {
  return {
    id: `dev_${randomBytes(6).toString("hex")}`,
    publicKey: randomBytes(32).toString("base64url").slice(0, 43),
    name: "host",
    facts: { hostname: "host", arch: "x86_64" },
    agentVersion: "0.1.0",
    capabilities: [],
    ...over,
  };
}

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`device store contract on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);

    it("enrolls with a token: counts the use, applies its labels, pending unless it auto-approves", async () => {
      const { devices } = fx.store;
      const t = token("orgA");
      await devices.createJoinToken(t);
      const r = await devices.enrollDevice(t.id, device(), NOW);
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.device).toMatchObject({ orgId: "orgA", lifecycle: "pending", labels: { env: "prod" }, generation: 1 });
      expect((await devices.getJoinToken(t.id))?.uses).toBe(1);

      const auto = token("orgA", { autoApprove: true });
      await devices.createJoinToken(auto);
      const r2 = await devices.enrollDevice(auto.id, device(), NOW);
      expect(r2.ok && r2.device.lifecycle).toBe("approved");
    });

    it("refuses unknown, revoked, expired and used-up tokens without writing anything", async () => {
      const { devices } = fx.store;
      const revoked = token("orgA", { revokedAt: NOW - 1 });
      const expired = token("orgA", { expiresAt: NOW });
      const usedUp = token("orgA", { usesAllowed: 1, uses: 1 });
      for (const t of [revoked, expired, usedUp]) await devices.createJoinToken(t);
      expect(await devices.enrollDevice("nosuch", device(), NOW)).toEqual({ ok: false, reason: "unknown-token" });
      expect(await devices.enrollDevice(revoked.id, device(), NOW)).toEqual({ ok: false, reason: "revoked" });
      expect(await devices.enrollDevice(expired.id, device(), NOW)).toEqual({ ok: false, reason: "expired" });
      expect(await devices.enrollDevice(usedUp.id, device(), NOW)).toEqual({ ok: false, reason: "used-up" });
      expect(await devices.listDevices("orgA")).toEqual([]);
      for (const t of [revoked, expired, usedUp]) expect((await devices.getJoinToken(t.id))?.uses).toBe(t.uses);
    });

    it("refuses a second enrollment of the same key and gives unique names host, host-2, host-3", async () => {
      const { devices } = fx.store;
      const t = token("orgA", { usesAllowed: 0 });
      await devices.createJoinToken(t);
      const first = device();
      await devices.enrollDevice(t.id, first, NOW);
      expect(await devices.enrollDevice(t.id, device({ publicKey: first.publicKey }), NOW)).toEqual({ ok: false, reason: "key-enrolled" });
      await devices.enrollDevice(t.id, device(), NOW);
      await devices.enrollDevice(t.id, device(), NOW);
      expect((await devices.listDevices("orgA")).map((d) => d.name)).toEqual(["host", "host-2", "host-3"]);
      expect((await devices.getJoinToken(t.id))?.uses).toBe(3);
    });

    it("gives two concurrent enrollments of one name different names", async () => {
      const { devices } = fx.store;
      const [a, b] = [token("orgA"), token("orgA")];
      await devices.createJoinToken(a);
      await devices.createJoinToken(b);
      const results = await Promise.all([devices.enrollDevice(a.id, device(), NOW), devices.enrollDevice(b.id, device(), NOW)]);
      expect(results.map((r) => r.ok)).toEqual([true, true]);
      expect((await devices.listDevices("orgA")).map((d) => d.name)).toEqual(["host", "host-2"]);
    });

    it("enrolls one key once when two enrollments present it at the same time", async () => {
      const { devices } = fx.store;
      const [a, b] = [token("orgA"), token("orgA")];
      await devices.createJoinToken(a);
      await devices.createJoinToken(b);
      const d = device();
      const results = await Promise.all([devices.enrollDevice(a.id, d, NOW), devices.enrollDevice(b.id, { ...d, id: `${d.id}x` }, NOW)]);
      expect(results.filter((r) => r.ok)).toHaveLength(1);
      expect(results.filter((r) => !r.ok)).toEqual([{ ok: false, reason: "key-enrolled" }]);
      expect(await devices.listDevices("orgA")).toHaveLength(1);
    });

    it("counts a single-use token once when two enrollments use it at the same time", async () => {
      const { devices } = fx.store;
      const t = token("orgA", { usesAllowed: 1 });
      await devices.createJoinToken(t);
      const results = await Promise.all([devices.enrollDevice(t.id, device(), NOW), devices.enrollDevice(t.id, device(), NOW)]);
      expect(results.filter((r) => r.ok)).toHaveLength(1);
      expect(results.filter((r) => !r.ok)).toEqual([{ ok: false, reason: "used-up" }]);
      expect((await devices.getJoinToken(t.id))?.uses).toBe(1);
    });

    it("refuses a second join token with the same id as a conflict", async () => {
      const { devices } = fx.store;
      const t = token("orgA");
      const results = await Promise.allSettled([devices.createJoinToken(t), devices.createJoinToken({ ...t, orgId: "orgB" })]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      const failed = results.find((r) => r.status === "rejected");
      expect(failed?.reason).toBeInstanceOf(StoreConflictError);
      expect(await devices.getJoinToken(t.id)).toBeDefined();
    });

    it("keeps every organization's devices and tokens invisible to the others", async () => {
      const { devices } = fx.store;
      const t = token("orgA");
      await devices.createJoinToken(t);
      const r = await devices.enrollDevice(t.id, device(), NOW);
      if (!r.ok) throw new Error("enroll failed");
      const id = r.device.id;
      expect(await devices.getDevice("orgB", id)).toBeUndefined();
      expect(await devices.getDeviceByName("orgB", r.device.name)).toBeUndefined();
      expect(await devices.listDevices("orgB")).toEqual([]);
      expect(await devices.listJoinTokens("orgB")).toEqual([]);
      expect(await devices.updateDevice("orgB", id, { setLabels: { x: "y" } }, NOW)).toBeUndefined();
      expect(await devices.revokeJoinToken("orgB", t.id, NOW)).toBe(false);
      await devices.setConnection("orgB", id, true, NOW);
      await devices.recordFacts("orgB", id, { facts: { evil: true }, agentVersion: "x", capabilities: [] }, NOW);
      const untouched = await devices.getDevice("orgA", id);
      expect(untouched).toMatchObject({ labels: { env: "prod" }, connected: false, agentVersion: "0.1.0", generation: 1 });
      expect(untouched?.facts).toEqual({ hostname: "host", arch: "x86_64" });
    });

    it("bumps the generation on every change of desired state, setting and removing labels", async () => {
      const { devices } = fx.store;
      const t = token("orgA");
      await devices.createJoinToken(t);
      const r = await devices.enrollDevice(t.id, device(), NOW);
      if (!r.ok) throw new Error("enroll failed");
      const a = await devices.updateDevice("orgA", r.device.id, { setLabels: { rack: "r1", tier: "gold" } }, NOW);
      expect(a).toMatchObject({ generation: 2, labels: { env: "prod", rack: "r1", tier: "gold" } });
      const b = await devices.updateDevice("orgA", r.device.id, { removeLabels: ["tier"], lifecycle: "approved" }, NOW);
      expect(b).toMatchObject({ generation: 3, lifecycle: "approved", labels: { env: "prod", rack: "r1" } });
      await devices.setObservedGeneration("orgA", r.device.id, 3);
      expect((await devices.getDevice("orgA", r.device.id))?.observedGeneration).toBe(3);
    });

    it("changes the labels of several devices at once, only the organization's pending or approved ones, and tells listeners about each", async () => {
      const { devices } = fx.store;
      const t = token("orgA", { usesAllowed: 5 });
      await devices.createJoinToken(t);
      const ids = Array.from({ length: 4 }, () => `dev_${randomBytes(6).toString("hex")}`);
      let seen: string[] = [];
      // Other test files may share the PostgreSQL database (and its notifications): only ours count.
      const off = devices.onDeviceChange((_orgId, deviceId) => {
        if (ids.includes(deviceId)) seen.push(deviceId);
      });
      const until = async (what: () => boolean) => {
        const deadline = Date.now() + 5_000;
        while (!what() && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      };
      for (let i = 0; i < 4; i++) {
        const r = await devices.enrollDevice(t.id, device({ id: ids[i]!, name: `h${i}` }), NOW);
        if (!r.ok) throw new Error("enroll failed");
      }
      await devices.updateDevice("orgA", ids[1]!, { lifecycle: "approved" }, NOW);
      await devices.updateDevice("orgA", ids[2]!, { lifecycle: "decommissioned" }, NOW);
      // Notifications arrive in commit order: once a marker committed after these is in, nothing
      // older is on its way.
      const marker = `dev_${randomBytes(6).toString("hex")}`;
      const m = await devices.enrollDevice(t.id, device({ id: marker, name: "marker" }), NOW);
      if (!m.ok) throw new Error("enroll failed");
      let markerSeen = false;
      const offMarker = devices.onDeviceChange((_orgId, deviceId) => (markerSeen ||= deviceId === marker));
      await devices.updateDevice("orgA", marker, { setLabels: { marker: "1" } }, NOW);
      await until(() => markerSeen);
      offMarker();
      seen = [];
      expect(await devices.updateDeviceLabels("orgB", ids, { setLabels: { x: "y" } }, NOW)).toBe(0);
      expect(await devices.updateDeviceLabels("orgA", ids, { setLabels: { ring: "canary" }, removeLabels: ["env"] }, NOW)).toBe(3);
      const after = await Promise.all(ids.map((id) => devices.getDevice("orgA", id)));
      expect(after.map((d) => d?.labels)).toEqual([{ ring: "canary" }, { ring: "canary" }, { env: "prod" }, { ring: "canary" }]);
      expect(after.map((d) => d?.generation)).toEqual([2, 3, 2, 2]);
      await until(() => seen.length >= 3);
      expect([...seen].sort()).toEqual([ids[0]!, ids[1]!, ids[3]!].sort());
      off();
      expect(await devices.updateDeviceLabels("orgA", [], { setLabels: { x: "y" } }, NOW)).toBe(0);
    });

    it("tells listeners about committed device changes", async () => {
      const { devices } = fx.store;
      const seen: string[] = [];
      const t = token("orgA");
      await devices.createJoinToken(t);
      const id = `dev_${randomBytes(6).toString("hex")}`;
      // Other test files may share the PostgreSQL database (and its notifications): only ours count.
      const off = devices.onDeviceChange((orgId, deviceId) => {
        if (deviceId === id) seen.push(`${orgId}/${deviceId}`);
      });
      const r = await devices.enrollDevice(t.id, device({ id }), NOW);
      if (!r.ok) throw new Error("enroll failed");
      await devices.updateDevice("orgA", r.device.id, { setLabels: { a: "b" } }, NOW);
      const deadline = Date.now() + 5_000;
      while (seen.length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      expect(seen).toEqual([`orgA/${r.device.id}`, `orgA/${r.device.id}`]);
      off();
    });

    it("remembers the acknowledged seq per device and stream", async () => {
      const { devices } = fx.store;
      expect(await devices.getAckedSeq("d1", "facts")).toBe(0);
      await devices.setAckedSeq("d1", "facts", 5);
      await devices.setAckedSeq("d1", "facts", 7);
      await devices.setAckedSeq("d1", "status", 2);
      expect(await devices.getAckedSeq("d1", "facts")).toBe(7);
      expect(await devices.getAckedSeq("d1", "status")).toBe(2);
      expect(await devices.getAckedSeq("d2", "facts")).toBe(0);
    });

    it("gives the next free suffix after many taken ones, and the lowest free one after a hostname of the same form", async () => {
      const { devices } = fx.store;
      const t = token("orgA", { usesAllowed: 0 });
      await devices.createJoinToken(t);
      for (let i = 0; i < 37; i++) await devices.enrollDevice(t.id, device(), NOW);
      const names = (await devices.listDevices("orgA")).map((d) => d.name);
      expect(new Set(names)).toEqual(new Set(["host", ...Array.from({ length: 36 }, (_, i) => `host-${i + 2}`)]));
      // A device whose own hostname is host-40 leaves host-38 and host-39 free; they come first.
      await devices.enrollDevice(t.id, device({ name: "host-40" }), NOW);
      const next = await devices.enrollDevice(t.id, device(), NOW);
      expect(next.ok && next.device.name).toBe("host-38");
      // Names of other organizations and of other stems do not count.
      await devices.createJoinToken({ ...token("orgB"), id: "tokB" });
      const other = await devices.enrollDevice("tokB", device(), NOW);
      expect(other.ok && other.device.name).toBe("host");
      const stem = await devices.enrollDevice(t.id, device({ name: "hos" }), NOW);
      expect(stem.ok && stem.device.name).toBe("hos");
    });

    /** Enrolls `n` devices of orgA (h0, h1, ...) with one token; their ids in order. */
    async function enrollMany(n: number): Promise<string[]> {
      const t = token("orgA", { usesAllowed: 0 });
      await fx.store.devices.createJoinToken(t);
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        const r = await fx.store.devices.enrollDevice(t.id, device({ name: `h${i}` }), NOW);
        if (!r.ok) throw new Error("enroll failed");
        ids.push(r.device.id);
      }
      return ids;
    }

    it("records many devices' presence in one call, and ignores ids of no device", async () => {
      const { devices } = fx.store;
      const ids = await enrollMany(3);
      const many = Array.from({ length: 1200 }, (_, i) => `dev_nosuch${i}`);
      await devices.recordPresence([ids[0]!, ids[1]!, ...many], [ids[2]!], NOW + 5);
      const rows = await Promise.all(ids.map((id) => devices.getDevice("orgA", id)));
      expect(rows.map((r) => [r?.connected, r?.lastSeenAt])).toEqual([[true, NOW + 5], [true, NOW + 5], [false, NOW + 5]]);
      await devices.recordPresence([], [ids[0]!], NOW + 9);
      expect(await devices.getDevice("orgA", ids[0]!)).toMatchObject({ connected: false, lastSeenAt: NOW + 9 });
    });

    it("records a report's facts, observed generation and acks together, and only its own organization's device", async () => {
      const { devices } = fx.store;
      const t = token("orgA");
      await devices.createJoinToken(t);
      const r = await devices.enrollDevice(t.id, device(), NOW);
      if (!r.ok) throw new Error("enroll failed");
      const id = r.device.id;
      const facts = { facts: { hostname: "host", arch: "aarch64" }, agentVersion: "0.2.0", capabilities: ["nixos"] };
      await devices.recordReport("orgA", id, { facts, observedGeneration: 1, acked: new Map([["facts", 4], ["status", 2]]) }, NOW + 1);
      expect(await devices.getDevice("orgA", id)).toMatchObject({ facts: facts.facts, agentVersion: "0.2.0", capabilities: ["nixos"], observedGeneration: 1, updatedAt: NOW + 1 });
      expect(await devices.getAckedSeqs(id)).toEqual(new Map([["facts", 4], ["status", 2]]));
      // Acks alone leave the reported state as it was.
      await devices.recordReport("orgA", id, { acked: new Map([["facts", 6]]) }, NOW + 2);
      expect(await devices.getDevice("orgA", id)).toMatchObject({ facts: facts.facts, observedGeneration: 1, updatedAt: NOW + 1 });
      expect(await devices.getAckedSeq(id, "facts")).toBe(6);
      await devices.recordReport("orgB", id, { facts: { ...facts, agentVersion: "evil" }, observedGeneration: 9, acked: new Map() }, NOW + 3);
      expect(await devices.getDevice("orgA", id)).toMatchObject({ agentVersion: "0.2.0", observedGeneration: 1 });
    });

    it("writes reports that arrive together in shared commits, each device's own and all of them", async () => {
      const { devices } = fx.store;
      const ids = await enrollMany(40);
      const { stats } = (devices as KyselyDeviceStore).reports;
      const before = { ...stats };
      // 40 devices report at once, as they do when a label change or a rollout step reaches them.
      await Promise.all(ids.map((id, i) => devices.recordReport("orgA", id, { observedGeneration: i + 2, acked: new Map([["status", i + 1]]) }, NOW + 1)));
      expect(stats.jobs - before.jobs).toBe(40);
      expect(stats.commits - before.commits).toBeLessThan(40);
      for (const [i, id] of ids.entries()) {
        expect((await devices.getDevice("orgA", id))?.observedGeneration).toBe(i + 2);
        expect(await devices.getAckedSeq(id, "status")).toBe(i + 1);
      }
    });

    it("keeps everything across close and reopen", async () => {
      const { devices } = fx.store;
      const t = token("orgA");
      await devices.createJoinToken(t);
      const r = await devices.enrollDevice(t.id, device(), NOW);
      if (!r.ok) throw new Error("enroll failed");
      await devices.updateDevice("orgA", r.device.id, { setLabels: { rack: "r9" } }, NOW);
      const again = await fx.reopen();
      expect((await again.devices.getDevice("orgA", r.device.id))?.labels).toEqual({ env: "prod", rack: "r9" });
      expect((await again.devices.getJoinToken(t.id))?.uses).toBe(1);
    });
  });
}
