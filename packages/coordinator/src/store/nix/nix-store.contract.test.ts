/**
 * The NixStore contract on every database: SQLite always, PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (a fresh database per test, dropped afterwards).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { storeBackends } from "../testing.ts";
import { type NixPathRow, type Store } from "../index.ts";


const backends = storeBackends;

const NOW = 1_800_000_000_000;
const hashPart = (c: string) => c.repeat(32);

function path(orgId: string, over: Partial<NixPathRow> = {}): NixPathRow {
  const h = over.hashPart ?? hashPart("a");
  return {
    orgId,
    hashPart: h,
    storePath: `/nix/store/${h}-system`,
    fileHash: "f".repeat(64),
    fileSize: 1234,
    narHash: "f".repeat(64),
    narSize: 1234,
    references: [`${hashPart("b")}-dep`],
    deriver: `${hashPart("c")}-system.drv`,
    sigs: ["k:sig"],
    ca: "",
    createdAt: NOW,
    ...over,
  };
}

for (const backend of backends) {
  describe.runIf(backend.enabled)(`NixStore on ${backend.name}`, () => {
    let store: Store;
    let drop: () => Promise<void>;
    beforeEach(async () => {
      ({ store, drop } = await backend.create());
      for (const id of ["org_a", "org_b"]) await store.access.createOrg({ id, name: id, createdAt: NOW });
    });
    afterEach(async () => {
      await store.close();
      await drop();
    });

    it("keeps one key per name in an organization, lists and deletes them per organization", async () => {
      const key = { orgId: "org_a", name: "cache-1", publicKey: "cHVi", sealedSecret: "v1:x", createdAt: NOW };
      expect(await store.nix.addKey(key)).toBe(true);
      expect(await store.nix.addKey({ ...key, publicKey: "b3RoZXI=" })).toBe(false);
      expect(await store.nix.addKey({ ...key, orgId: "org_b", sealedSecret: null })).toBe(true);
      expect(await store.nix.listKeys("org_a")).toEqual([key]);
      expect(await store.nix.deleteKey("org_b", "cache-1")).toBe(true);
      expect(await store.nix.deleteKey("org_b", "cache-1")).toBe(false);
      expect(await store.nix.listKeys("org_a")).toHaveLength(1);
    });

    it("stores path metadata per organization and never replaces it: a second add returns what is stored", async () => {
      expect(await store.nix.addPath(path("org_a"))).toBeUndefined();
      expect(await store.nix.getPath("org_a", hashPart("a"))).toEqual(path("org_a"));
      expect(await store.nix.getPath("org_b", hashPart("a"))).toBeUndefined();
      const other = path("org_a", { sigs: ["k:other"], narHash: "e".repeat(64), fileHash: "e".repeat(64), narSize: 99, createdAt: NOW + 1 });
      expect(await store.nix.addPath(other)).toEqual(path("org_a"));
      expect(await store.nix.getPath("org_a", hashPart("a"))).toEqual(path("org_a"));
      // The same hash part in another organization is that organization's own path.
      expect(await store.nix.addPath(path("org_b", { narSize: 7 }))).toBeUndefined();
      expect((await store.nix.getPath("org_b", hashPart("a")))?.narSize).toBe(7);
    });

    it("keeps the first of two concurrent adds of one path and tells the other what is stored", async () => {
      const a = path("org_a", { narHash: "1".repeat(64), fileHash: "1".repeat(64) });
      const b = path("org_a", { narHash: "2".repeat(64), fileHash: "2".repeat(64) });
      const [ra, rb] = await Promise.all([store.nix.addPath(a), store.nix.addPath(b)]);
      const stored = await store.nix.getPath("org_a", hashPart("a"));
      expect([a, b]).toContainEqual(stored);
      expect([ra, rb].filter((r) => r === undefined)).toHaveLength(1);
      expect([ra, rb].find((r) => r !== undefined)).toEqual(stored);
    });

    it("answers which paths and NAR files an organization holds, and only its own", async () => {
      await store.nix.addPath(path("org_a"));
      await store.nix.addPath(path("org_a", { hashPart: hashPart("d"), fileHash: "e".repeat(64) }));
      expect(await store.nix.existingPaths("org_a", [hashPart("a"), hashPart("b"), hashPart("d")])).toEqual(new Set([hashPart("a"), hashPart("d")]));
      expect(await store.nix.existingPaths("org_b", [hashPart("a")])).toEqual(new Set());
      expect(await store.nix.existingPaths("org_a", [])).toEqual(new Set());
      expect(await store.nix.hasFile("org_a", "e".repeat(64))).toBe(true);
      expect(await store.nix.hasFile("org_b", "e".repeat(64))).toBe(false);
    });

    it("remembers which organization uploaded which NAR", async () => {
      await store.nix.recordNar("org_a", "e".repeat(64), NOW);
      await store.nix.recordNar("org_a", "e".repeat(64), NOW + 1);
      expect(await store.nix.hasNar("org_a", "e".repeat(64))).toBe(true);
      expect(await store.nix.hasNar("org_b", "e".repeat(64))).toBe(false);
    });
  });
}
