/**
 * The replica store's contract, on SQLite always and on PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each test in a fresh database, dropped afterwards).
 */
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { MAX_EVENT_PAYLOAD } from "./events.ts";
import { storeBackends, storeForEachTest } from "../testing.ts";

const NOW = 1_800_000_000_000;

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`replica store contract on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);

    it("gives a lease to one holder until it expires, lets it renew, and lets another take it after", async () => {
      const { replicas } = fx.store;
      expect(await replicas.acquireLease("gc", "a", NOW, 1000)).toBe(true);
      expect(await replicas.acquireLease("gc", "b", NOW + 10, 1000)).toBe(false);
      expect(await replicas.acquireLease("gc", "a", NOW + 500, 1000)).toBe(true); // renewal: until NOW + 1500
      expect(await replicas.acquireLease("gc", "b", NOW + 1200, 1000)).toBe(false);
      expect(await replicas.leaseHolder("gc", NOW + 1200)).toBe("a");
      expect(await replicas.acquireLease("gc", "b", NOW + 1500, 1000)).toBe(true);
      expect(await replicas.acquireLease("gc", "a", NOW + 1600, 1000)).toBe(false);
      expect(await replicas.leaseHolder("gc", NOW + 1600)).toBe("b");
      // Leases of other names are apart.
      expect(await replicas.acquireLease("tuf", "a", NOW + 1600, 1000)).toBe(true);
    });

    it("gives a lease to exactly one of many holders asking at once", async () => {
      const { replicas } = fx.store;
      const won = await Promise.all(["a", "b", "c", "d", "e"].map((h) => replicas.acquireLease("tick", h, NOW, 1000)));
      expect(won.filter(Boolean)).toHaveLength(1);
    });

    it("frees a lease its holder releases, and only its holder", async () => {
      const { replicas } = fx.store;
      await replicas.acquireLease("gc", "a", NOW, 60_000);
      await replicas.releaseLease("gc", "b");
      expect(await replicas.leaseHolder("gc", NOW)).toBe("a");
      await replicas.releaseLease("gc", "a");
      expect(await replicas.leaseHolder("gc", NOW)).toBeUndefined();
      expect(await replicas.acquireLease("gc", "b", NOW, 1000)).toBe(true);
    });

    it("lists the replicas heard from since a time, with their latest address", async () => {
      const { replicas } = fx.store;
      await replicas.heartbeatReplica({ id: "r1", address: "http://10.0.0.1:1", now: NOW });
      await replicas.heartbeatReplica({ id: "r2", address: "http://10.0.0.2:1", now: NOW });
      await replicas.heartbeatReplica({ id: "r1", address: "http://10.0.0.1:2", now: NOW + 5000 });
      expect(await replicas.liveReplicas(NOW + 1000)).toEqual([{ id: "r1", address: "http://10.0.0.1:2", startedAt: NOW, seenAt: NOW + 5000 }]);
      expect((await replicas.liveReplicas(NOW)).map((r) => r.id)).toEqual(["r1", "r2"]);
      await replicas.removeReplica("r1");
      expect((await replicas.liveReplicas(NOW)).map((r) => r.id)).toEqual(["r2"]);
    });

    it("delivers published events to the topic's subscribers, in order, and none after unsubscribing", async () => {
      const { events } = fx.store.replicas;
      const got: string[] = [];
      const other: string[] = [];
      const off = events.subscribe("logs", (p) => got.push(p));
      events.subscribe("rollouts", (p) => other.push(p));
      for (const p of ["a", "b:c", "multi\nline"]) await events.publish("logs", p);
      await events.publish("rollouts", "r");
      await waitFor("three events", () => got.length === 3 && other.length === 1);
      expect(got).toEqual(["a", "b:c", "multi\nline"]);
      off();
      await events.publish("logs", "late");
      await events.publish("rollouts", "r2");
      await waitFor("the other topic's second event", () => other.length === 2);
      expect(got).toHaveLength(3);
      await expect(events.publish("logs", "x".repeat(MAX_EVENT_PAYLOAD + 1))).rejects.toThrow(/payload over/);
    });

    it("records the first coordinator key of several offered at once, and replaces it only from the recorded one", async () => {
      const { replicas } = fx.store;
      const seen = await Promise.all(["k1", "k2", "k3"].map((k) => replicas.recordIdentity(k, NOW)));
      expect(new Set(seen).size).toBe(1);
      const first = seen[0]!;
      expect(await replicas.recordIdentity("k9", NOW)).toBe(first);
      expect(await replicas.replaceIdentity("k9", "k10", NOW)).toBe(false);
      expect(await replicas.replaceIdentity(first, "k10", NOW)).toBe(true);
      expect(await replicas.recordIdentity("k1", NOW)).toBe("k10");
    });
  });
}
