/**
 * The telemetry store's contract on every database: SQLite always, PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (a fresh database per test, dropped afterwards).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { storeBackends } from "../testing.ts";
import { type LogRecordInput, type Store } from "../index.ts";


const backends = storeBackends;

const T0 = 1_800_000_000_000;
const rec = (seq: number, line = `line ${seq}`, unit = "webapp"): LogRecordInput => ({ seq, time: T0 + seq, unit, source: "stdout", line });
const none = { droppedThrough: 0, droppedTotal: 0 };

for (const backend of backends) {
  describe.skipIf(!backend.enabled)(`telemetry store on ${backend.name}`, () => {
    let store: Store;
    let drop: () => Promise<void>;
    beforeEach(async () => {
      ({ store, drop } = await backend.create());
    });
    afterEach(async () => {
      await store.close();
      await drop();
    });

    it("stores a resent batch once and acknowledges the highest contiguous seq", async () => {
      const first = await store.telemetry.ingestLogs("org1", "dev1", "logs", [1, 2, 3].map((s) => rec(s)), none);
      expect(first.ackedSeq).toBe(3);
      expect(first.added.map((r) => r.seq)).toEqual([1, 2, 3]);
      const again = await store.telemetry.ingestLogs("org1", "dev1", "logs", [2, 3, 4].map((s) => rec(s)), none);
      expect(again.ackedSeq).toBe(4);
      expect(again.added.map((r) => r.seq)).toEqual([4]);
      const gap = await store.telemetry.ingestLogs("org1", "dev1", "logs", [6, 7].map((s) => rec(s)), none);
      expect(gap.ackedSeq).toBe(4);
      const lines = await store.telemetry.queryLogs("org1", { limit: 100 });
      expect(lines.map((l) => l.seq)).toEqual([1, 2, 3, 4, 6, 7]);
    });

    it("counts seqs the agent reports dropped as delivered, and keeps the highest dropped total", async () => {
      const r = await store.telemetry.ingestLogs("org1", "dev1", "logs", [11, 12].map((s) => rec(s)), { droppedThrough: 10, droppedTotal: 10 });
      expect(r.ackedSeq).toBe(12);
      await store.telemetry.ingestLogs("org1", "dev1", "logs", [13].map((s) => rec(s)), { droppedThrough: 10, droppedTotal: 7 });
      expect(await store.telemetry.dropped("org1", "dev1")).toEqual({ logs: 10 });
      expect(await store.telemetry.droppedTotals()).toEqual({ logs: 10 });
    });

    it("queries by organization, device, unit, time and text, the newest lines oldest first", async () => {
      await store.telemetry.ingestLogs("org1", "dev1", "logs", [rec(1, "Error: disk"), rec(2, "ok", "db"), rec(3, "100%_done"), rec(4, "error again")], none);
      await store.telemetry.ingestLogs("org1", "dev2", "logs", [rec(1, "error elsewhere")], none);
      await store.telemetry.ingestLogs("org2", "dev9", "logs", [rec(1, "error other org")], none);
      const q = (over: Partial<Parameters<Store["telemetry"]["queryLogs"]>[1]>) =>
        store.telemetry.queryLogs("org1", { limit: 100, ...over }).then((ls) => ls.map((l) => `${l.deviceId}:${l.line}`));
      expect(await q({ grep: "error" })).toEqual(["dev1:Error: disk", "dev2:error elsewhere", "dev1:error again"]);
      expect(await q({ grep: "%_" })).toEqual(["dev1:100%_done"]);
      expect(await q({ deviceIds: ["dev1"], unit: "db" })).toEqual(["dev1:ok"]);
      expect(await q({ deviceIds: ["dev1"], since: T0 + 3 })).toEqual(["dev1:100%_done", "dev1:error again"]);
      expect(await q({ deviceIds: ["dev1"], limit: 2 })).toEqual(["dev1:100%_done", "dev1:error again"]);
      expect(await q({ deviceIds: [] })).toEqual([]);
    });

    it("keeps metric samples per device and returns the newest of each", async () => {
      const point = (v: number) => [{ name: "system.cpu.utilization", value: v, attributes: { state: "user" }, unit: "1", monotonic: false }];
      const r = await store.telemetry.ingestMetrics("org1", "dev1", "metrics", [1, 2, 3].map((s) => ({ seq: s, time: T0 + s, points: point(s / 10) })), none);
      expect(r.ackedSeq).toBe(3);
      await store.telemetry.ingestMetrics("org1", "dev2", "metrics", [{ seq: 1, time: T0, points: point(0.5) }], none);
      const recent = await store.telemetry.recentMetrics("org1", "dev1", 2);
      expect(recent.map((s) => s.points[0]!.value)).toEqual([0.2, 0.3]);
      expect(await store.telemetry.recentMetrics("org2", "dev1", 2)).toEqual([]);
      const latest = await store.telemetry.latestMetrics();
      expect(latest.map((s) => [s.deviceId, s.seq]).sort()).toEqual([["dev1", 3], ["dev2", 1]]);
    });

    it("prunes by age and then by size, oldest first", async () => {
      await store.telemetry.ingestLogs("org1", "dev1", "logs", Array.from({ length: 100 }, (_, i) => rec(i + 1, "x".repeat(100))), none);
      expect(await store.telemetry.prune(T0 + 11, 1 << 30)).toBe(10);
      // Each line costs about 170 bytes (text, unit and a fixed overhead): 10 000 bytes hold 58.
      await store.telemetry.prune(0, 10_000);
      const left = await store.telemetry.queryLogs("org1", { limit: 1000 });
      expect(left.length).toBeGreaterThan(0);
      expect(left.length).toBeLessThanOrEqual(58);
      expect(left.at(-1)!.seq).toBe(100);
      expect(left.map((l) => l.seq)).toEqual(Array.from({ length: left.length }, (_, i) => 101 - left.length + i));
    });
  });
}
