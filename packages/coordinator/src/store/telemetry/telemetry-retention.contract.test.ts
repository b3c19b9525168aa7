/** Each organization's own retention of logs and metric samples: stored, and applied by prune to it alone. */
import { describe, expect, it } from "vitest";
import { storeBackends, storeForEachTest } from "../testing.ts";

const T0 = 1_800_000_000_000;
const none = { droppedThrough: 0, droppedTotal: 0 };
const point = [{ name: "app.load", value: 1, attributes: {}, unit: "1", monotonic: false }];

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`telemetry retention on ${backend.name}`, () => {
    const fx = storeForEachTest(backend, T0);

    it("stores an organization's retention and prunes its logs and samples by it, others by the default", async () => {
      const { telemetry } = fx.store;
      expect(await telemetry.getRetention("orgA")).toEqual({ logsMs: 0, metricsMs: 0 });
      await telemetry.setRetention("orgA", { logsMs: 3_600_000, metricsMs: 0 });
      expect(await telemetry.getRetention("orgA")).toEqual({ logsMs: 3_600_000, metricsMs: 0 });
      expect([...(await telemetry.listRetention()).keys()]).toEqual(["orgA"]);

      for (const org of ["orgA", "orgB"]) {
        await telemetry.ingestLogs(org, `${org}-dev`, "logs", [{ seq: 1, time: T0, unit: "app", source: "stdout", line: "old" }], none, T0);
        await telemetry.ingestMetrics(org, `${org}-dev`, "metrics", [{ seq: 1, time: T0, points: point }], none, T0);
      }
      // The default keeps everything received since T0 - 1; orgA's own log retention reaches past T0.
      await telemetry.prune(T0 - 1, 1 << 30, new Map([["orgA", { logs: T0 + 1, metrics: T0 - 1 }]]));
      expect(await telemetry.queryLogs("orgA", { limit: 10 })).toEqual([]);
      expect((await telemetry.recentMetrics("orgA", "orgA-dev", 10)).map((m) => m.seq)).toEqual([1]);
      expect((await telemetry.queryLogs("orgB", { limit: 10 })).map((l) => l.line)).toEqual(["old"]);

      await telemetry.setRetention("orgA", { logsMs: 0, metricsMs: 86_400_000 });
      expect(await telemetry.getRetention("orgA")).toEqual({ logsMs: 0, metricsMs: 86_400_000 });
    });
  });
}
