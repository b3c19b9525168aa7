/**
 * Paging through an organization's devices (`device ls`) at fleet scale: 20,000 devices inserted
 * directly, read page by page, each once, in order, none of another organization's.
 */
import type { Kysely } from "kysely";
import { describe, expect, it } from "vitest";
import type { Database } from "../schema/schema.ts";
import { storeBackends, storeForEachTest } from "../testing.ts";

const NOW = 1_800_000_000_000;
const FLEET = 20_000;

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`device pages on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);

    it("pages through 20,000 devices in name order, each exactly once, and only the organization's", async () => {
      // The store's own database handle, to insert the fleet in bulk rather than by enrollment.
      const db = (fx.store as unknown as { db: Kysely<Database> }).db;
      const row = (i: number, orgId: string) => ({
        id: `dev_${orgId}_${String(i).padStart(6, "0")}`,
        org_id: orgId,
        name: `host-${String(i).padStart(6, "0")}`,
        public_key: `${orgId}-${i}`,
        lifecycle: "approved",
        labels: "{}",
        facts: "{}",
        agent_version: "0.1.0",
        capabilities: "[]",
        generation: 1,
        observed_generation: 0,
        connected: 0,
        last_seen_at: null,
        join_token_id: null,
        created_at: NOW,
        updated_at: NOW,
      });
      for (let i = 0; i < FLEET; i += 500) {
        await db.insertInto("devices").values(Array.from({ length: Math.min(500, FLEET - i) }, (_, k) => row(i + k, "orgA"))).execute();
      }
      await db.insertInto("devices").values(Array.from({ length: 10 }, (_, k) => row(k, "orgB"))).execute();

      const seen: string[] = [];
      let after: { name: string; id: string } | undefined;
      let pages = 0;
      for (;;) {
        const page = await fx.store.devices.listDevicesPage("orgA", 1000, after);
        pages++;
        seen.push(...page.map((d) => d.id));
        if (page.length < 1000) break;
        const last = page.at(-1)!;
        after = { name: last.name, id: last.id };
      }
      expect(pages).toBe(FLEET / 1000 + 1);
      expect(seen.length).toBe(FLEET);
      expect(new Set(seen).size).toBe(FLEET);
      expect(seen.every((id) => id.startsWith("dev_orgA_"))).toBe(true);
      expect(seen).toEqual([...seen].sort());
    }, 120_000);
  });
}
