/**
 * The session store's contract, on SQLite always and on PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each test in a fresh database, dropped afterwards).
 */
import { describe, expect, it } from "vitest";
import { storeBackends, storeForEachTest } from "../testing.ts";
import { StoreConflictError } from "../index.ts";
import type { KyselySessionStore } from "./session-store.ts";

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

    it("writes nonces and sessions asked for at once in shared commits, refusing only the replay and the conflict among them", async () => {
      const sessions = fx.store.sessions as KyselySessionStore;
      const before = { ...sessions.writes.stats };
      const session = (i: number) => ({ tokenHash: `s${i}`, orgId: "orgA", principalKind: "device" as const, principalId: `dev${i}`, createdAt: NOW, expiresAt: NOW + 60_000 });
      const [nonces, created] = await Promise.all([
        Promise.all(Array.from({ length: 30 }, (_, i) => sessions.useNonce(`n${i === 29 ? 3 : i}`, NOW + 60_000, NOW))),
        Promise.allSettled(Array.from({ length: 30 }, (_, i) => sessions.createSession(session(i === 29 ? 3 : i)))),
      ]);
      expect(nonces.filter((ok) => !ok)).toHaveLength(1);
      expect(nonces.slice(0, 29).every(Boolean)).toBe(true);
      expect(created.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason)).toEqual([expect.any(StoreConflictError)]);
      for (let i = 0; i < 29; i++) expect((await sessions.getSession(`s${i}`, NOW))?.principalId).toBe(`dev${i}`);
      expect(sessions.writes.stats.jobs - before.jobs).toBeGreaterThanOrEqual(60);
      expect(sessions.writes.stats.commits - before.commits).toBeLessThan(60);
    });

    it("sweeps expired sessions and nonces as it writes, at most once a minute", async () => {
      const { sessions } = fx.store;
      await sessions.createSession({ tokenHash: "old", orgId: "orgA", principalKind: "admin", principalId: "key1", createdAt: NOW, expiresAt: NOW + 1000 });
      expect(await sessions.useNonce("n-old", NOW + 1000, NOW)).toBe(true);
      // Within the minute: nothing is swept yet, the expired session is still in the table.
      await sessions.createSession({ tokenHash: "mid", orgId: "orgA", principalKind: "admin", principalId: "key1", createdAt: NOW + 2000, expiresAt: NOW + 90_000 });
      expect((await sessions.getSession("old", NOW))?.principalId).toBe("key1");
      // A minute on, the next writes sweep: the expired rows are gone (a nonce can be used again).
      await sessions.createSession({ tokenHash: "new", orgId: "orgA", principalKind: "admin", principalId: "key1", createdAt: NOW + 61_000, expiresAt: NOW + 120_000 });
      expect(await sessions.getSession("old", NOW)).toBeUndefined();
      expect((await sessions.getSession("mid", NOW + 61_000))?.tokenHash).toBe("mid");
      expect(await sessions.useNonce("n-fresh", NOW + 120_000, NOW + 61_000)).toBe(true);
      expect(await sessions.useNonce("n-old", NOW + 120_000, NOW + 61_000)).toBe(true);
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
