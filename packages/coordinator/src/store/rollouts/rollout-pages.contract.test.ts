/** Paging through an organization's rollouts (`rollout ls`): newest first, each once, ties on time crossed. */
import { describe, expect, it } from "vitest";
import { storeBackends, storeForEachTest } from "../testing.ts";
import type { RolloutRow } from "../index.ts";

const NOW = 1_800_000_000_000;

function finished(id: string, orgId: string, createdAt: number): RolloutRow {
  return {
    id,
    orgId,
    releaseName: "webapp",
    releaseVersion: "1.0.0",
    releaseCounter: 1,
    spec: { releaseName: "webapp", releaseVersion: "1.0.0", selector: "", waves: ["100%"], maxParallel: 0, failureThreshold: "", soakMs: 0, approveEachWave: false, deadlineMs: 0 },
    waves: [{ number: 1, entry: "100%" }],
    ineligible: [],
    status: "completed",
    reason: "",
    currentWave: 1,
    waveFinishedAt: null,
    approvedWave: 1,
    toleratedFailures: 0,
    deadlineAt: null,
    createdBy: "key:test",
    createdAt,
    updatedAt: createdAt,
    version: 1,
  };
}

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`rollout pages on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, NOW);

    it("pages newest first, each rollout once, across rollouts created in the same millisecond", async () => {
      const { rollouts } = fx.store;
      // Two pairs share a creation time, so a page boundary falls inside a tie.
      const times = [NOW, NOW + 1, NOW + 1, NOW + 2, NOW + 2, NOW + 3, NOW + 4];
      for (const [i, t] of times.entries()) expect(await rollouts.createRollout(finished(`ro_${i}`, "orgA", t), [])).toEqual({ ok: true });
      await rollouts.createRollout(finished("ro_other", "orgB", NOW + 5), []);
      const seen: string[] = [];
      let before: { createdAt: number; id: string } | undefined;
      for (;;) {
        const page = await rollouts.listRollouts("orgA", 2, before);
        seen.push(...page.map((r) => r.id));
        const last = page.at(-1);
        if (page.length < 2 || !last) break;
        before = { createdAt: last.createdAt, id: last.id };
      }
      expect(seen).toEqual(["ro_6", "ro_5", "ro_4", "ro_3", "ro_2", "ro_1", "ro_0"]);
    });
  });
}
