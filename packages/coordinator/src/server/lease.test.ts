import { silentLogger } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Store } from "../store/index.ts";
import { storeBackends } from "../store/testing.ts";
import { DatabaseLeases, soleLeases } from "./lease.ts";
import { startPeriodic, type Periodic } from "./periodic.ts";

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`periodic tasks under a lease on ${backend.name}`, () => {
    let db: Awaited<ReturnType<typeof backend.create>>;
    let store: Store;
    const periodics: Periodic[] = [];
    beforeEach(async () => {
      db = await backend.create();
      store = db.store;
    });
    afterEach(async () => {
      for (const p of periodics.splice(0)) await p.close();
      await store.close();
      await db.drop();
    });

    it("run on one of three replicas only, and on another once the holder gives its lease back", async () => {
      const replicas = ["r1", "r2", "r3"].map((id) => new DatabaseLeases(store.replicas, id));
      const runs = new Map<string, number>();
      const started = await Promise.all(
        replicas.map((l) =>
          startPeriodic(async () => void runs.set(l.replicaId, (runs.get(l.replicaId) ?? 0) + 1), 20, silentLogger, "failed", {
            runNow: true,
            lease: { leases: l, name: "tick" },
          }),
        ),
      );
      periodics.push(...started);
      const holder = await waitFor("five runs", async () => [...runs].find(([, n]) => n >= 5)?.[0]);
      expect([...runs.keys()]).toEqual([holder]);

      const i = replicas.findIndex((l) => l.replicaId === holder);
      await started[i]!.close();
      await replicas[i]!.close();
      const next = await waitFor("another replica running", async () => [...runs.keys()].find((k) => k !== holder));
      expect(await store.replicas.leaseHolder("tick", Date.now())).toBe(next);
    });

    it("take over a dead holder's work once its lease expired", async () => {
      // A holder that died: its lease runs 100 ms more and is never given back.
      await store.replicas.acquireLease("tick", "dead", Date.now(), 100);
      const l = new DatabaseLeases(store.replicas, "alive");
      let runs = 0;
      periodics.push(await startPeriodic(async () => void runs++, 20, silentLogger, "failed", { lease: { leases: l, name: "tick" } }));
      await waitFor("the live replica running", async () => runs > 0);
      expect(await store.replicas.leaseHolder("tick", Date.now())).toBe("alive");
    });
  });
}

describe("soleLeases", () => {
  it("always holds: the only process on its database runs every tick", async () => {
    expect(await soleLeases().hold("anything", 1)).toBe(true);
  });
});
