/**
 * The audit store's contract, on SQLite always and on PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each test in a fresh database, dropped afterwards).
 */
import { describe, expect, it } from "vitest";
import { storeBackends, storeForEachTest } from "../testing.ts";
import type { NewAuditEntry } from "../index.ts";

const NOW = 1_800_000_000_000;

function entry(orgId: string, actor: string, time = NOW): NewAuditEntry {
  return { orgId, time, actor, action: "Login", target: "t", source: "127.0.0.1", outcome: "ok", detail: "" };
}

const seal = (seq: number, prevHash: string) => `${prevHash}>${seq}`;

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`audit store contract on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);

    it("chains each organization's entries, also when appends race", async () => {
      const { audit } = fx.store;
      expect(await audit.getAuditHead("orgA")).toBeUndefined();
      await Promise.all([1, 2, 3].map((i) => audit.appendAudit(entry("orgA", `key:${i}`), seal)));
      await audit.appendAudit(entry("orgB", "key:b"), seal);
      const listed = await audit.listAudit("orgA");
      expect(listed.map((e) => [e.seq, e.prevHash, e.hash])).toEqual([
        [1, "", ">1"],
        [2, ">1", ">1>2"],
        [3, ">1>2", ">1>2>3"],
      ]);
      expect(await audit.getAuditHead("orgA")).toEqual({ seq: 3, hash: ">1>2>3" });
      expect((await audit.listAudit("orgB")).map((e) => e.seq)).toEqual([1]);
    });

    it("lists the newest entries from a time and by an actor, in seq order", async () => {
      const { audit } = fx.store;
      for (let i = 0; i < 4; i++) await audit.appendAudit(entry("orgA", i % 2 ? "key:odd" : "key:even", NOW + i), seal);
      expect((await audit.listAudit("orgA", { since: NOW + 1 })).map((e) => e.seq)).toEqual([2, 3, 4]);
      expect((await audit.listAudit("orgA", { actor: "key:odd" })).map((e) => e.seq)).toEqual([2, 4]);
      expect((await audit.listAudit("orgA", { limit: 2 })).map((e) => e.seq)).toEqual([3, 4]);
    });
  });
}
