/**
 * The telemetry store's contract on every database: SQLite always, PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (a fresh database per test, dropped afterwards).
 */
import { Migrator } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { migrationProvider } from "../migrations/migrations.ts";
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

    it("stores a large batch whole, every line once, with a resent part of it in the next", async () => {
      const seqs = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
      // 1,237 lines: more than one statement's worth on every database, and an odd remainder.
      const first = await store.telemetry.ingestLogs("org1", "dev1", "logs", seqs(1, 1237).map((s) => rec(s)), none);
      expect(first.ackedSeq).toBe(1237);
      expect(first.added.map((r) => r.seq)).toEqual(seqs(1, 1237));
      await store.telemetry.ingestLogs("org1", "dev1", "logs", [1300].map((s) => rec(s)), none);
      const next = await store.telemetry.ingestLogs("org1", "dev1", "logs", seqs(1200, 1400).map((s) => rec(s)), none);
      expect(next.ackedSeq).toBe(1400);
      expect(next.added.map((r) => r.seq)).toEqual(seqs(1238, 1400).filter((s) => s !== 1300));
      const lines = await store.telemetry.queryLogs("org1", { deviceIds: ["dev1"], limit: 2000 });
      expect(lines.map((l) => l.seq)).toEqual(seqs(1, 1400));
      expect(lines[636]).toEqual({ orgId: "org1", deviceId: "dev1", stream: "logs", ...rec(637) });
      expect(await store.telemetry.usage("org1")).toEqual({ logBytes: lines.reduce((n, l) => n + l.line.length + l.unit.length + 64, 0), metricBytes: 0 });
    });

    it("counts seqs the agent reports dropped as delivered, and keeps the highest dropped total", async () => {
      const r = await store.telemetry.ingestLogs("org1", "dev1", "logs", [11, 12].map((s) => rec(s)), { droppedThrough: 10, droppedTotal: 10 });
      expect(r.ackedSeq).toBe(12);
      await store.telemetry.ingestLogs("org1", "dev1", "logs", [13].map((s) => rec(s)), { droppedThrough: 10, droppedTotal: 7 });
      expect(await store.telemetry.dropped("org1", "dev1")).toEqual({ logs: 10 });
      expect(await store.telemetry.droppedTotals()).toEqual({ logs: 10 });
    });

    it("counts the unsettled seqs it does not hold as dropped, says how many it holds, and counts them once however often they are sent", async () => {
      // Seqs 1..10 went out in a batch whose answer the agent never heard; 1..6 arrived.
      await store.telemetry.ingestLogs("org1", "dev1", "logs", [1, 2, 3, 4, 5, 6].map((s) => rec(s)), none);
      // Meanwhile the agent dropped 1..20 from disk (20 - 10 of them never sent: its total says 10).
      const drops = { droppedThrough: 20, droppedTotal: 10, unsettled: [{ from: 1, to: 10 }] };
      const r = await store.telemetry.ingestLogs("org1", "dev1", "logs", [21, 22].map((s) => rec(s)), drops);
      expect(r.unsettledHeld).toBe(6);
      expect(r.ackedSeq).toBe(22);
      expect(await store.telemetry.dropped("org1", "dev1")).toEqual({ logs: 14 });
      // The answer was lost again: the same report comes with the next batch, and counts the same.
      const again = await store.telemetry.ingestLogs("org1", "dev1", "logs", [23].map((s) => rec(s)), drops);
      expect(again.unsettledHeld).toBe(6);
      expect(await store.telemetry.dropped("org1", "dev1")).toEqual({ logs: 14 });
      // Settled: the agent's own total now holds the 4, and no range goes with it.
      const settled = await store.telemetry.ingestLogs("org1", "dev1", "logs", [24].map((s) => rec(s)), { droppedThrough: 20, droppedTotal: 14 });
      expect(settled.unsettledHeld).toBeUndefined();
      expect(await store.telemetry.dropped("org1", "dev1")).toEqual({ logs: 14 });
      // Metric samples are counted against their own table.
      const point = { name: "system.cpu.utilization", value: 0.5, attributes: {}, unit: "1", monotonic: false };
      await store.telemetry.ingestMetrics("org1", "dev1", "metrics", [1, 2].map((seq) => ({ seq, time: T0 + seq, points: [point] })), none);
      const m = await store.telemetry.ingestMetrics("org1", "dev1", "metrics", [], { droppedThrough: 5, droppedTotal: 2, unsettled: [{ from: 1, to: 3 }] });
      expect(m.unsettledHeld).toBe(2);
      expect(await store.telemetry.dropped("org1", "dev1")).toEqual({ logs: 14, metrics: 3 });
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

    it("pages every matching line from the oldest, once each, across devices with equal times and for one device", async () => {
      // dev1 and dev2 share times: the cursor must tell lines of the same millisecond apart.
      const same = (seq: number): LogRecordInput => ({ seq, time: T0 + Math.ceil(seq / 3), unit: "webapp", source: "stdout", line: `line ${seq}` });
      await store.telemetry.ingestLogs("org1", "dev1", "logs", Array.from({ length: 25 }, (_, i) => same(i + 1)), none);
      await store.telemetry.ingestLogs("org1", "dev2", "logs", Array.from({ length: 25 }, (_, i) => same(i + 1)), none);
      await store.telemetry.ingestLogs("org2", "dev9", "logs", [same(1)], none);
      const pages = async (deviceIds: string[] | undefined, size: number) => {
        const seen: string[] = [];
        let after = {};
        for (let i = 0; i < 100; i++) {
          const page = await store.telemetry.queryLogs("org1", { deviceIds, limit: size, after });
          seen.push(...page.map((l) => `${l.deviceId}/${l.seq}`));
          if (page.length < size) return seen;
          const last = page.at(-1)!;
          after = { time: last.time, deviceId: last.deviceId, seq: last.seq };
        }
        throw new Error("paging did not end");
      };
      const newest = await store.telemetry.queryLogs("org1", { limit: 1000 });
      const everyLine = newest.map((l) => `${l.deviceId}/${l.seq}`);
      expect(everyLine).toHaveLength(50);
      for (const size of [1, 4, 7, 50]) expect(await pages(undefined, size)).toEqual(everyLine);
      expect(await pages(["dev2"], 4)).toEqual(Array.from({ length: 25 }, (_, i) => `dev2/${i + 1}`));
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

    it("keeps one organization's lines whatever another organization's devices claim or send", async () => {
      const now = Date.now();
      const line = (seq: number, time: number, text: string): LogRecordInput => ({ seq, time, unit: "app", source: "stdout", line: text });
      // Organization B: a quiet device, 20 lines just received.
      await store.telemetry.ingestLogs("orgB", "devB", "logs", Array.from({ length: 20 }, (_, i) => line(i + 1, now - 1000 + i, `b ${i + 1}`)), none, now - 1);
      // Organization A: a flood of lines claiming a time ten years ahead, and a line claiming 1970.
      const ahead = now + 10 * 365 * 86_400_000;
      for (let b = 0; b < 4; b++) {
        await store.telemetry.ingestLogs("orgA", "devA", "logs", Array.from({ length: 500 }, (_, i) => line(b * 500 + i + 1, ahead + i, "a".repeat(1000))), none, now + b);
      }
      await store.telemetry.ingestLogs("orgA", "devA2", "logs", [line(1, 1, "a from 1970")], none, now + 10);

      await store.telemetry.prune(now - 7 * 86_400_000, 100_000);

      const b = await store.telemetry.queryLogs("orgB", { limit: 1000 });
      expect(b.map((l) => l.line)).toEqual(Array.from({ length: 20 }, (_, i) => `b ${i + 1}`));
      const a = await store.telemetry.queryLogs("orgA", { limit: 10_000 });
      // Organization A is cut to its own bound (about 1070 bytes a line), its newest lines kept.
      expect(a.length).toBeGreaterThan(0);
      expect(a.length).toBeLessThanOrEqual(100);
      expect(a.filter((l) => l.deviceId === "devA").at(-1)!.seq).toBe(2000);
      // A claimed time decides nothing about a line's lifetime: received now, kept for the retention period.
      expect((await store.telemetry.queryLogs("orgA", { deviceIds: ["devA2"], limit: 10 })).map((l) => l.line)).toEqual(["a from 1970"]);
    });

    it("prunes by the time the coordinator received a line, then by size, earliest received first", async () => {
      // Ten batches of ten lines, received at T0 .. T0 + 9; the device's claimed times run backwards.
      for (let b = 0; b < 10; b++) {
        const lines = Array.from({ length: 10 }, (_, i) => ({ ...rec(b * 10 + i + 1, "x".repeat(100)), time: T0 - (b * 10 + i) * 1000 }));
        await store.telemetry.ingestLogs("org1", "dev1", "logs", lines, none, T0 + b);
      }
      expect(await store.telemetry.prune(T0 + 1, 1 << 30)).toBe(10);
      // Each line costs about 170 bytes (text, unit and a fixed overhead): 10 000 bytes hold 58,
      // and pruning keeps 90% of that.
      await store.telemetry.prune(0, 10_000);
      const left = await store.telemetry.queryLogs("org1", { deviceIds: ["dev1"], limit: 1000 });
      expect(left.length).toBeGreaterThan(40);
      expect(left.length).toBeLessThanOrEqual(52);
      expect(left.at(-1)!.seq).toBe(100);
      expect(left.map((l) => l.seq)).toEqual(Array.from({ length: left.length }, (_, i) => 101 - left.length + i));
      expect((await store.telemetry.usage("org1")).logBytes).toBe(left.length * (100 + 6 + 64));
    });

    it("prunes samples by receive time and by size per organization too", async () => {
      const point = [{ name: "app.load", value: 1, attributes: { k: "v".repeat(200) }, unit: "1", monotonic: false }];
      for (const org of ["org1", "org2"]) {
        await store.telemetry.ingestMetrics(org, `${org}-dev`, "metrics", Array.from({ length: 50 }, (_, i) => ({ seq: i + 1, time: 0, points: point })), none, T0);
      }
      await store.telemetry.ingestMetrics("org1", "org1-dev", "metrics", Array.from({ length: 200 }, (_, i) => ({ seq: 51 + i, time: 0, points: point })), none, T0 + 1);
      await store.telemetry.prune(T0 + 1, 20_000);
      // org1: its 50 samples received at T0 fall to the age limit, its flood to its own bound.
      const org1 = await store.telemetry.recentMetrics("org1", "org1-dev", 1000);
      expect(org1.length).toBeGreaterThan(0);
      expect(org1[0]!.seq).toBeGreaterThan(50);
      expect((await store.telemetry.usage("org1")).metricBytes).toBeLessThanOrEqual(18_000);
      // org2's samples were received at T0 as well: the age limit takes them, org1's volume does not matter.
      expect(await store.telemetry.recentMetrics("org2", "org2-dev", 1000)).toEqual([]);
      await store.telemetry.ingestMetrics("org2", "org2-dev", "metrics", [{ seq: 51, time: 0, points: point }], none, T0 + 2);
      await store.telemetry.prune(T0 + 1, 20_000);
      expect((await store.telemetry.recentMetrics("org2", "org2-dev", 10)).map((m) => m.seq)).toEqual([51]);
    });

    it("keeps each organization's byte count in step with its rows through resends and pruning", async () => {
      const cost = (n: number) => n * ("line 1".length + "webapp".length + 64);
      await store.telemetry.ingestLogs("org1", "dev1", "logs", [1, 2, 3].map((s) => rec(s)), none, T0);
      await store.telemetry.ingestLogs("org1", "dev1", "logs", [2, 3, 4, 6].map((s) => rec(s)), none, T0);
      expect((await store.telemetry.ingestLogs("org1", "dev1", "logs", [5, 6].map((s) => rec(s)), none, T0 + 5)).added.map((l) => l.seq)).toEqual([5]);
      await store.telemetry.ingestLogs("org1", "dev2", "logs", [1].map((s) => rec(s)), none, T0);
      expect(await store.telemetry.usage("org1")).toEqual({ logBytes: cost(7), metricBytes: 0 });
      expect(await store.telemetry.usage("org2")).toEqual({ logBytes: 0, metricBytes: 0 });
      expect(await store.telemetry.prune(T0 + 1, 1 << 30)).toBe(6);
      expect(await store.telemetry.usage("org1")).toEqual({ logBytes: cost(1), metricBytes: 0 });
      expect((await store.telemetry.queryLogs("org1", { limit: 10 })).map((l) => `${l.deviceId}:${l.seq}`)).toEqual(["dev1:5"]);
    });
  });

  describe.skipIf(!backend.enabled)(`telemetry limits migration on ${backend.name}`, () => {
    it("gives stored lines and samples a receive time no later than the migration, and counts each stream's bytes", async () => {
      const fresh = await backend.fresh();
      const before = Date.now();
      try {
        const raw = fresh.raw();
        try {
          const { error } = await new Migrator({ db: raw, provider: migrationProvider }).migrateTo("0010_artifact_owners");
          expect(error).toBeUndefined();
          const line = (seq: number, time: number) => ({ org_id: "org1", device_id: "dev1", stream: "logs", seq, time, unit: "app", source: "stdout", line: "hello", bytes: 72 });
          await raw.insertInto("log_records").values([line(1, T0 - 10 * 365 * 86_400_000), line(2, 10 * before)]).execute();
          await raw.insertInto("metric_samples").values([{ org_id: "org1", device_id: "dev1", stream: "metrics", seq: 1, time: 5, points: "[]" }]).execute();
          await raw
            .insertInto("telemetry_streams")
            .values([
              { device_id: "dev1", stream: "logs", org_id: "org1", acked_seq: 2, dropped_total: 0 },
              { device_id: "dev1", stream: "metrics", org_id: "org1", acked_seq: 1, dropped_total: 0 },
            ])
            .execute();
        } finally {
          await raw.destroy();
        }
        const migrated = await fresh.open();
        try {
          expect(await migrated.telemetry.usage("org1")).toEqual({ logBytes: 144, metricBytes: 2 + 64 });
        } finally {
          await migrated.close();
        }
        const check = fresh.raw();
        try {
          const rows = await check.selectFrom("log_records").select(["seq", "received_at"]).orderBy("seq").execute();
          expect(Number(rows[0]!.received_at)).toBe(T0 - 10 * 365 * 86_400_000);
          expect(Number(rows[1]!.received_at)).toBeGreaterThanOrEqual(before);
          expect(Number(rows[1]!.received_at)).toBeLessThanOrEqual(Date.now());
          const sample = await check.selectFrom("metric_samples").select(["received_at", "bytes"]).executeTakeFirstOrThrow();
          expect([Number(sample.received_at), Number(sample.bytes)]).toEqual([5, 66]);
        } finally {
          await check.destroy();
        }
      } finally {
        await fresh.drop();
      }
    });
  });
}
