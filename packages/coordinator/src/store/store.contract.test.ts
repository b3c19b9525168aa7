/**
 * One contract, every database: the same tests run on SQLite always and on PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each run in a fresh database, dropped afterwards).
 */
import { randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { storeBackends, type StoreBackend } from "./testing.ts";
import { type JoinTokenRow, type NewDevice, type Store } from "./index.ts";



const backends = storeBackends;

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

for (const backend of backends) {
  describe.skipIf(!backend.enabled)(`store contract on ${backend.name}`, () => {
    let store: Store;
    let ctx: Awaited<ReturnType<StoreBackend["create"]>>;
    const opened: Store[] = [];

    beforeEach(async () => {
      ctx = await backend.create();
      store = ctx.store;
      opened.push(store);
      await store.createOrg({ id: "orgA", name: "acme", createdAt: NOW });
      await store.createOrg({ id: "orgB", name: "globex", createdAt: NOW });
    });
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
      await ctx.drop();
    });

    it("runs its migrations twice without harm", async () => {
      await store.migrate();
      await store.migrate();
      expect((await store.listOrgs()).map((o) => o.name)).toEqual(["acme", "globex"]);
    });

    it("bootstraps the first owner once, and refuses a wrong or spent setup code writing nothing", async () => {
      await store.setSetting("setup_code_hash", "good");
      const key = { id: "key1", name: "owner", publicKey: "k".repeat(43), createdAt: NOW };
      const member = { id: "mem1", name: "owner", createdAt: NOW };
      expect(await store.bootstrapOwner({ setupCodeHash: "bad", orgId: "org1", orgName: "first", member, key, now: NOW })).toBeUndefined();
      expect(await store.getOrg("org1")).toBeUndefined();

      const ok = await store.bootstrapOwner({ setupCodeHash: "good", orgId: "org1", orgName: "first", member, key, now: NOW });
      expect(ok?.key.orgId).toBe("org1");
      expect((await store.findAdminKeysByPublicKey("k".repeat(43))).map((k) => k.role)).toEqual(["owner"]);

      const again = await store.bootstrapOwner({ setupCodeHash: "good", orgId: "org2", orgName: "second", member: { ...member, id: "mem2" }, key: { ...key, id: "key2" }, now: NOW });
      expect(again).toBeUndefined();
      expect(await store.getOrg("org2")).toBeUndefined();
    });

    it("enrolls with a token: counts the use, applies its labels, pending unless it auto-approves", async () => {
      const t = token("orgA");
      await store.createJoinToken(t);
      const r = await store.enrollDevice(t.id, device(), NOW);
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(r.device).toMatchObject({ orgId: "orgA", lifecycle: "pending", labels: { env: "prod" }, generation: 1 });
      expect((await store.getJoinToken(t.id))?.uses).toBe(1);

      const auto = token("orgA", { autoApprove: true });
      await store.createJoinToken(auto);
      const r2 = await store.enrollDevice(auto.id, device(), NOW);
      expect(r2.ok && r2.device.lifecycle).toBe("approved");
    });

    it("refuses unknown, revoked, expired and used-up tokens without writing anything", async () => {
      const revoked = token("orgA", { revokedAt: NOW - 1 });
      const expired = token("orgA", { expiresAt: NOW });
      const usedUp = token("orgA", { usesAllowed: 1, uses: 1 });
      for (const t of [revoked, expired, usedUp]) await store.createJoinToken(t);
      expect(await store.enrollDevice("nosuch", device(), NOW)).toEqual({ ok: false, reason: "unknown-token" });
      expect(await store.enrollDevice(revoked.id, device(), NOW)).toEqual({ ok: false, reason: "revoked" });
      expect(await store.enrollDevice(expired.id, device(), NOW)).toEqual({ ok: false, reason: "expired" });
      expect(await store.enrollDevice(usedUp.id, device(), NOW)).toEqual({ ok: false, reason: "used-up" });
      expect(await store.listDevices("orgA")).toEqual([]);
      for (const t of [revoked, expired, usedUp]) expect((await store.getJoinToken(t.id))?.uses).toBe(t.uses);
    });

    it("refuses a second enrollment of the same key and gives unique names host, host-2, host-3", async () => {
      const t = token("orgA", { usesAllowed: 0 });
      await store.createJoinToken(t);
      const first = device();
      await store.enrollDevice(t.id, first, NOW);
      expect(await store.enrollDevice(t.id, device({ publicKey: first.publicKey }), NOW)).toEqual({ ok: false, reason: "key-enrolled" });
      await store.enrollDevice(t.id, device(), NOW);
      await store.enrollDevice(t.id, device(), NOW);
      expect((await store.listDevices("orgA")).map((d) => d.name)).toEqual(["host", "host-2", "host-3"]);
      expect((await store.getJoinToken(t.id))?.uses).toBe(3);
    });

    it("keeps every organization's devices and tokens invisible to the others", async () => {
      const t = token("orgA");
      await store.createJoinToken(t);
      const r = await store.enrollDevice(t.id, device(), NOW);
      if (!r.ok) throw new Error("enroll failed");
      const id = r.device.id;
      expect(await store.getDevice("orgB", id)).toBeUndefined();
      expect(await store.getDeviceByName("orgB", r.device.name)).toBeUndefined();
      expect(await store.listDevices("orgB")).toEqual([]);
      expect(await store.listJoinTokens("orgB")).toEqual([]);
      expect(await store.updateDevice("orgB", id, { setLabels: { x: "y" } }, NOW)).toBeUndefined();
      expect(await store.revokeJoinToken("orgB", t.id, NOW)).toBe(false);
      await store.setConnection("orgB", id, true, NOW);
      await store.recordFacts("orgB", id, { facts: { evil: true }, agentVersion: "x", capabilities: [] }, NOW);
      const untouched = await store.getDevice("orgA", id);
      expect(untouched).toMatchObject({ labels: { env: "prod" }, connected: false, agentVersion: "0.1.0", generation: 1 });
      expect(untouched?.facts).toEqual({ hostname: "host", arch: "x86_64" });
    });

    it("bumps the generation on every change of desired state, setting and removing labels", async () => {
      const t = token("orgA");
      await store.createJoinToken(t);
      const r = await store.enrollDevice(t.id, device(), NOW);
      if (!r.ok) throw new Error("enroll failed");
      const a = await store.updateDevice("orgA", r.device.id, { setLabels: { rack: "r1", tier: "gold" } }, NOW);
      expect(a).toMatchObject({ generation: 2, labels: { env: "prod", rack: "r1", tier: "gold" } });
      const b = await store.updateDevice("orgA", r.device.id, { removeLabels: ["tier"], lifecycle: "approved" }, NOW);
      expect(b).toMatchObject({ generation: 3, lifecycle: "approved", labels: { env: "prod", rack: "r1" } });
      await store.setObservedGeneration("orgA", r.device.id, 3);
      expect((await store.getDevice("orgA", r.device.id))?.observedGeneration).toBe(3);
    });

    it("tells listeners about committed device changes", async () => {
      const seen: string[] = [];
      const off = store.onDeviceChange((orgId, deviceId) => seen.push(`${orgId}/${deviceId}`));
      const t = token("orgA");
      await store.createJoinToken(t);
      const r = await store.enrollDevice(t.id, device(), NOW);
      if (!r.ok) throw new Error("enroll failed");
      await store.updateDevice("orgA", r.device.id, { setLabels: { a: "b" } }, NOW);
      const deadline = Date.now() + 5_000;
      while (seen.length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      expect(seen).toEqual([`orgA/${r.device.id}`, `orgA/${r.device.id}`]);
      off();
    });

    it("refuses a replayed nonce", async () => {
      expect(await store.useNonce("n1", NOW + 60_000, NOW)).toBe(true);
      expect(await store.useNonce("n1", NOW + 60_000, NOW)).toBe(false);
      expect(await store.useNonce("n2", NOW + 60_000, NOW)).toBe(true);
    });

    it("finds sessions only until they expire, and deletes a principal's sessions", async () => {
      await store.createSession({ tokenHash: "s1", orgId: "orgA", principalKind: "admin", principalId: "key1", createdAt: NOW, expiresAt: NOW + 1000 });
      expect((await store.getSession("s1", NOW))?.principalId).toBe("key1");
      expect(await store.getSession("s1", NOW + 1000)).toBeUndefined();
      await store.deleteSessionsOf("admin", "key1");
      expect(await store.getSession("s1", NOW)).toBeUndefined();
    });

    it("remembers the acknowledged seq per device and stream", async () => {
      expect(await store.getAckedSeq("d1", "facts")).toBe(0);
      await store.setAckedSeq("d1", "facts", 5);
      await store.setAckedSeq("d1", "facts", 7);
      await store.setAckedSeq("d1", "status", 2);
      expect(await store.getAckedSeq("d1", "facts")).toBe(7);
      expect(await store.getAckedSeq("d1", "status")).toBe(2);
      expect(await store.getAckedSeq("d2", "facts")).toBe(0);
    });

    it("keeps everything across close and reopen", async () => {
      const t = token("orgA");
      await store.createJoinToken(t);
      const r = await store.enrollDevice(t.id, device(), NOW);
      if (!r.ok) throw new Error("enroll failed");
      await store.updateDevice("orgA", r.device.id, { setLabels: { rack: "r9" } }, NOW);
      await store.close();
      opened.splice(opened.indexOf(store), 1);
      const again = await ctx.reopen();
      opened.push(again);
      expect((await again.getDevice("orgA", r.device.id))?.labels).toEqual({ env: "prod", rack: "r9" });
      expect((await again.getJoinToken(t.id))?.uses).toBe(1);
    });
  });
}
