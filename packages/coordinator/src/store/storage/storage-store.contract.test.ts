/**
 * The StorageStore contract on every database: SQLite always, PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (a fresh database per test, dropped afterwards).
 */
import { Migrator } from "kysely";
import { describe, expect, it } from "vitest";
import { migrationProvider } from "../migrations/migrations.ts";
import { storeBackends, storeForEachTest } from "../testing.ts";

const NOW = 1_800_000_000_000;
const QUOTA = 1000;

for (const backend of storeBackends) {
  describe.runIf(backend.enabled)(`StorageStore on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);
    const storage = () => fx.store.storage;

    it("reserves room for an upload within the quota, then charges the object once and gives the reservation back", async () => {
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 0, reservedBytes: 0 });
      expect(await storage().reserve("orgA", "artifact:x:600", 600, QUOTA, NOW)).toEqual({ ok: true });
      // Reserving the same upload again (a resume) holds no more room, and touches it.
      expect(await storage().reserve("orgA", "artifact:x:600", 600, QUOTA, NOW + 5)).toEqual({ ok: true });
      expect(await storage().reservation("orgA", "artifact:x:600")).toEqual({ orgId: "orgA", uploadKey: "artifact:x:600", bytes: 600, createdAt: NOW, touchedAt: NOW + 5 });
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 0, reservedBytes: 600 });

      // 600 + 500 would pass 1000: refused, nothing changed.
      expect(await storage().reserve("orgA", "artifact:y:500", 500, QUOTA, NOW)).toEqual({ ok: false, usage: { usedBytes: 0, reservedBytes: 600 } });
      expect(await storage().reservation("orgA", "artifact:y:500")).toBeUndefined();
      // Another organization's room is its own.
      expect(await storage().reserve("orgB", "artifact:y:500", 500, QUOTA, NOW)).toEqual({ ok: true });

      expect(await storage().charged("orgA", "artifact", "x")).toBe(false);
      expect(await storage().commit("orgA", "artifact:x:600", { kind: "artifact", key: "x", bytes: 600 }, NOW)).toBe(true);
      expect(await storage().charged("orgA", "artifact", "x")).toBe(true);
      expect(await storage().charged("orgA", "nar", "x")).toBe(false);
      expect(await storage().charged("orgB", "artifact", "x")).toBe(false);
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 600, reservedBytes: 0 });
      expect(await storage().reservation("orgA", "artifact:x:600")).toBeUndefined();
      // The same object uploaded again is not charged twice.
      await storage().reserve("orgA", "artifact:x:600", 300, QUOTA, NOW);
      expect(await storage().commit("orgA", "artifact:x:600", { kind: "artifact", key: "x", bytes: 600 }, NOW)).toBe(false);
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 600, reservedBytes: 0 });
      // A NAR with the same key is another object.
      await storage().reserve("orgA", "nar:t1", 100, QUOTA, NOW);
      expect(await storage().commit("orgA", "nar:t1", { kind: "nar", key: "x", bytes: 100 }, NOW)).toBe(true);
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 700, reservedBytes: 0 });
      expect(await storage().usage("orgB")).toEqual({ usedBytes: 0, reservedBytes: 500 });
    });

    it("grows a reservation as a streamed upload arrives, up to the quota, and releases it", async () => {
      expect(await storage().reserve("orgA", "nar:t1", 400, QUOTA, NOW)).toEqual({ ok: true });
      expect(await storage().reserve("orgA", "nar:t1", 900, QUOTA, NOW)).toEqual({ ok: true });
      // Never shrinks.
      expect(await storage().reserve("orgA", "nar:t1", 100, QUOTA, NOW)).toEqual({ ok: true });
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 0, reservedBytes: 900 });
      expect(await storage().reserve("orgA", "nar:t1", 1001, QUOTA, NOW)).toEqual({ ok: false, usage: { usedBytes: 0, reservedBytes: 900 } });
      expect(await storage().reserve("orgA", "nar:t1", 1000, QUOTA, NOW)).toEqual({ ok: true });
      // No quota: anything fits.
      expect(await storage().reserve("orgA", "nar:t2", 10 ** 12, null, NOW)).toEqual({ ok: true });
      expect(await storage().release("orgA", "nar:t1")).toBe(true);
      expect(await storage().release("orgA", "nar:t1")).toBe(false);
      expect(await storage().release("orgA", "nar:t2")).toBe(true);
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 0, reservedBytes: 0 });
    });

    it("lets concurrent reservations together hold no more than the quota", async () => {
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => storage().reserve("orgA", `artifact:${i}:300`, 300, QUOTA, NOW)));
      expect(results.filter((r) => r.ok)).toHaveLength(3);
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 0, reservedBytes: 900 });
      const commits = await Promise.all(
        Array.from({ length: 10 }, (_, i) => storage().commit("orgA", `artifact:${i}:300`, { kind: "artifact", key: "same", bytes: 300 }, NOW)),
      );
      expect(commits.filter(Boolean)).toHaveLength(1);
      expect(await storage().usage("orgA")).toEqual({ usedBytes: 300, reservedBytes: 0 });
    });

    it("lists the reservations of a kind not touched since a time, oldest first, at most a limit", async () => {
      await storage().reserve("orgA", "artifact:a:1", 1, null, NOW + 2);
      await storage().reserve("orgB", "artifact:b:1", 1, null, NOW + 1);
      await storage().reserve("orgA", "nar:t", 1, null, NOW);
      await storage().reserve("orgA", "artifact:c:1", 1, null, NOW + 10);
      const keys = async (prefix: string, before: number, limit = 10) =>
        (await storage().staleReservations(prefix, before, limit)).map((r) => [r.orgId, r.uploadKey]);
      expect(await keys("artifact:", NOW + 10)).toEqual([["orgB", "artifact:b:1"], ["orgA", "artifact:a:1"]]);
      expect(await keys("artifact:", NOW + 10, 1)).toEqual([["orgB", "artifact:b:1"]]);
      expect(await keys("nar:", NOW + 10)).toEqual([["orgA", "nar:t"]]);
      expect(await keys("", NOW + 1)).toEqual([["orgA", "nar:t"]]);
      await expect(storage().staleReservations("a%", NOW, 1)).rejects.toThrow();
    });
  });

  describe.runIf(backend.enabled)(`storage quotas migration on ${backend.name}`, () => {
    it("charges each organization for the artifacts it owns and the NARs its cache names", async () => {
      const fresh = await backend.fresh();
      try {
        const raw = fresh.raw();
        try {
          const { error } = await new Migrator({ db: raw, provider: migrationProvider }).migrateTo("0010_artifact_owners");
          expect(error).toBeUndefined();
          await raw.insertInto("orgs").values([{ id: "orgA", name: "acme", created_at: NOW }, { id: "orgB", name: "globex", created_at: NOW }]).execute();
          await raw
            .insertInto("artifact_owners")
            .values([
              { org_id: "orgA", sha256: "a".repeat(64), length: 1000, created_at: NOW },
              { org_id: "orgA", sha256: "b".repeat(64), length: 24, created_at: NOW },
              { org_id: "orgB", sha256: "a".repeat(64), length: 1000, created_at: NOW },
            ])
            .execute();
          const path = (orgId: string, hashPart: string, fileHash: string, size: number) => ({
            org_id: orgId, hash_part: hashPart, store_path: `/nix/store/${hashPart}-x`, file_hash: fileHash, file_size: size,
            nar_hash: fileHash, nar_size: size, refs: "[]", deriver: "", sigs: "[]", ca: "", created_at: NOW,
          });
          // Two paths in one NAR file are one NAR.
          await raw
            .insertInto("nix_paths")
            .values([path("orgB", "1".repeat(32), "c".repeat(64), 500), path("orgB", "2".repeat(32), "c".repeat(64), 500), path("orgB", "3".repeat(32), "d".repeat(64), 7)])
            .execute();
        } finally {
          await raw.destroy();
        }
        const store = await fresh.open();
        try {
          expect(await store.storage.usage("orgA")).toEqual({ usedBytes: 1024, reservedBytes: 0 });
          expect(await store.storage.usage("orgB")).toEqual({ usedBytes: 1507, reservedBytes: 0 });
          // What was charged by the migration is not charged again.
          expect(await store.storage.commit("orgB", "nar:t", { kind: "nar", key: "c".repeat(64), bytes: 500 }, NOW)).toBe(false);
          expect(await store.storage.commit("orgA", "artifact:x", { kind: "artifact", key: "a".repeat(64), bytes: 1000 }, NOW)).toBe(false);
        } finally {
          await store.close();
        }
      } finally {
        await fresh.drop();
      }
    });
  });
}
