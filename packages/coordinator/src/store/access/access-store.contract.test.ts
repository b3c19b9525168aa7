/**
 * The access store's contract (organizations, members, keys, API tokens), on SQLite always and
 * on PostgreSQL when FLOTILLA_TEST_POSTGRES_URL is set (each test in a fresh database).
 */
import { describe, expect, it } from "vitest";
import { storeBackends, storeForEachTest } from "../testing.ts";
import { StoreConflictError, type MemberRow } from "../index.ts";

const NOW = 1_800_000_000_000;

function member(id: string, name: string): MemberRow {
  return { id, orgId: "orgA", name, role: "admin", passwordHash: null, createdAt: NOW, removedAt: null };
}

/** Exactly one of two concurrent claims succeeded; the other lost with a `StoreConflictError`. */
async function expectOneWinner(claims: [Promise<unknown>, Promise<unknown>]): Promise<void> {
  const results = await Promise.allSettled(claims);
  expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
  const lost = results.find((r) => r.status === "rejected");
  expect(lost?.reason).toBeInstanceOf(StoreConflictError);
}

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`access store contract on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);

    it("runs its migrations twice without harm", async () => {
      const { store } = fx;
      await store.migrate();
      await store.migrate();
      expect((await store.access.listOrgs()).map((o) => o.name)).toEqual(["acme", "globex"]);
    });

    it("bootstraps the first owner once, and refuses a wrong or spent setup code writing nothing", async () => {
      const { settings, access } = fx.store;
      await settings.setSetting("setup_code_hash", "good");
      const key = { id: "key1", name: "owner", publicKey: "k".repeat(43), createdAt: NOW };
      const owner = { id: "mem1", name: "owner", createdAt: NOW };
      expect(await access.bootstrapOwner({ setupCodeHash: "bad", orgId: "org1", orgName: "first", member: owner, key, now: NOW })).toBeUndefined();
      expect(await access.getOrg("org1")).toBeUndefined();

      const ok = await access.bootstrapOwner({ setupCodeHash: "good", orgId: "org1", orgName: "first", member: owner, key, now: NOW });
      expect(ok?.key.orgId).toBe("org1");
      expect((await access.findAdminKeysByPublicKey("k".repeat(43))).map((k) => k.role)).toEqual(["owner"]);

      const again = await access.bootstrapOwner({ setupCodeHash: "good", orgId: "org2", orgName: "second", member: { ...owner, id: "mem2" }, key: { ...key, id: "key2" }, now: NOW });
      expect(again).toBeUndefined();
      expect(await access.getOrg("org2")).toBeUndefined();
    });

    it("gives an organization name to one of two concurrent creations", async () => {
      const { access } = fx.store;
      await expectOneWinner([access.createOrg({ id: "org1", name: "initech", createdAt: NOW }), access.createOrg({ id: "org2", name: "initech", createdAt: NOW })]);
      expect((await access.listOrgs()).filter((o) => o.name === "initech")).toHaveLength(1);
    });

    it("refuses a taken member name as a conflict with the old message, and gives it to one of two concurrent additions", async () => {
      const { access } = fx.store;
      await access.addMember(member("m1", "alice"));
      await expect(access.addMember(member("m2", "alice"))).rejects.toThrow(new StoreConflictError("a member named alice"));
      await expect(access.addMember(member("m2", "alice"))).rejects.toThrow("a member named alice already exists");

      await expectOneWinner([access.addMember(member("m3", "bob")), access.addMember(member("m4", "bob"))]);
      expect((await access.listMembers("orgA")).map((m) => m.name)).toEqual(["alice", "bob"]);
    });

    it("registers a public key once per organization, also when two registrations race", async () => {
      const { access } = fx.store;
      await access.addMember(member("m1", "alice"));
      await access.addMember(member("m2", "bob"));
      const key = (id: string, memberId: string) => ({ id, orgId: "orgA", memberId, name: id, publicKey: "p".repeat(43), createdAt: NOW, revokedAt: null });
      await expectOneWinner([access.addAdminKey(key("k1", "m1")), access.addAdminKey(key("k2", "m2"))]);
      expect(await access.listAdminKeys("orgA")).toHaveLength(1);
      // Once revoked, the key may be registered again.
      const [registered] = await access.listAdminKeys("orgA");
      expect(await access.revokeAdminKey("orgA", registered!.id, NOW)).toBe(true);
      await access.addAdminKey(key("k3", "m1"));
      expect((await access.listAdminKeys("orgA")).map((k) => k.id)).toEqual(["k3"]);
    });

    it("refuses a second API token with the same id as a conflict", async () => {
      const { access } = fx.store;
      const token = { id: "tok1", orgId: "orgA", name: "ci", role: "deployer" as const, secretHash: "s".repeat(64), createdBy: "key:owner", createdAt: NOW, expiresAt: NOW + 1000, revokedAt: null };
      await expectOneWinner([access.createApiToken(token), access.createApiToken({ ...token, orgId: "orgB" })]);
      expect((await access.getApiToken("tok1"))?.name).toBe("ci");
    });
  });
}
