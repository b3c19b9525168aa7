/**
 * The settings store's contract, on SQLite always and on PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each test in a fresh database, dropped afterwards).
 */
import { describe, expect, it } from "vitest";
import { storeBackends, storeForEachTest } from "../testing.ts";

const NOW = 1_800_000_000_000;

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`settings store contract on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);

    it("keeps the last value set for a key, and nothing for an unset one", async () => {
      const { settings } = fx.store;
      expect(await settings.getSetting("a")).toBeUndefined();
      await settings.setSetting("a", "1");
      await settings.setSetting("a", "2");
      await settings.setSetting("b", "3");
      expect(await settings.getSetting("a")).toBe("2");
      expect(await settings.getSetting("b")).toBe("3");
    });
  });
}
