/**
 * The session store's contract, on SQLite always and on PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each test in a fresh database, dropped afterwards).
 */
import { describe, expect, it } from "vitest";
import { storeBackends, storeForEachTest } from "../testing.ts";
import { StoreConflictError } from "../index.ts";

const NOW = 1_800_000_000_000;

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`session store contract on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);

    it("refuses a replayed nonce", async () => {
      const { sessions } = fx.store;
      expect(await sessions.useNonce("n1", NOW + 60_000, NOW)).toBe(true);
      expect(await sessions.useNonce("n1", NOW + 60_000, NOW)).toBe(false);
      expect(await sessions.useNonce("n2", NOW + 60_000, NOW)).toBe(true);
    });

    it("accepts a nonce once when two requests present it at the same time", async () => {
      const { sessions } = fx.store;
      const used = await Promise.all([sessions.useNonce("n1", NOW + 60_000, NOW), sessions.useNonce("n1", NOW + 60_000, NOW)]);
      expect(used.sort()).toEqual([false, true]);
    });

    it("finds sessions only until they expire, and deletes a principal's sessions", async () => {
      const { sessions } = fx.store;
      await sessions.createSession({ tokenHash: "s1", orgId: "orgA", principalKind: "admin", principalId: "key1", createdAt: NOW, expiresAt: NOW + 1000 });
      expect((await sessions.getSession("s1", NOW))?.principalId).toBe("key1");
      expect(await sessions.getSession("s1", NOW + 1000)).toBeUndefined();
      await sessions.deleteSessionsOf("admin", "key1");
      expect(await sessions.getSession("s1", NOW)).toBeUndefined();
    });

    it("refuses a second session with the same token hash as a conflict", async () => {
      const { sessions } = fx.store;
      const session = { tokenHash: "s1", orgId: "orgA", principalKind: "admin" as const, principalId: "key1", createdAt: NOW, expiresAt: NOW + 1000 };
      await sessions.createSession(session);
      await expect(sessions.createSession({ ...session, principalId: "key2" })).rejects.toBeInstanceOf(StoreConflictError);
      expect((await sessions.getSession("s1", NOW))?.principalId).toBe("key1");
    });
  });
}
