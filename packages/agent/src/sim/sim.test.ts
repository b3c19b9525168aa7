import { encodeJoinString } from "@flotilla/protocol/agent";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { simPingIntervalMs } from "./device.ts";
import { runSlice } from "./run.ts";
import type { SimOptions, SliceStats } from "./slice.ts";
import { durationMs, percent, perMinute } from "./config.ts";
import { failingDevices } from "./random.ts";
import { bucketQuantile, latencyBucket } from "./slice.ts";

describe("failingDevices", () => {
  it("fails exactly round(rate * devices) devices, the same ones for the same seed and target", () => {
    const a = failingDevices(200, 0.05, 42, "webapp/2/webapp.tar.gz");
    expect(a.size).toBe(10);
    expect([...a.values()].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(failingDevices(200, 0.05, 42, "webapp/2/webapp.tar.gz")).toEqual(a);
    for (const i of a.keys()) expect(i >= 0 && i < 200).toBe(true);
    expect([...failingDevices(200, 0.05, 43, "webapp/2/webapp.tar.gz").keys()].sort()).not.toEqual([...a.keys()].sort());
    expect([...failingDevices(200, 0.05, 42, "webapp/3/webapp.tar.gz").keys()].sort()).not.toEqual([...a.keys()].sort());
    expect(failingDevices(200, 0, 42, "x").size).toBe(0);
    expect(failingDevices(7, 1, 42, "x").size).toBe(7);
  });
});

describe("sim option values", () => {
  it("reads durations, rates and churn rates, and refuses what is not one", () => {
    expect(durationMs.parse("50ms")).toBe(50);
    expect(durationMs.parse("10s")).toBe(10_000);
    expect(durationMs.parse("2m")).toBe(120_000);
    expect(durationMs.parse("250")).toBe(250);
    expect(durationMs.safeParse("soon").success).toBe(false);
    expect(percent.parse("2%")).toBeCloseTo(0.02);
    expect(percent.parse("0.5")).toBe(0.5);
    expect(percent.safeParse("150%").success).toBe(false);
    expect(perMinute.parse("1%/min")).toBeCloseTo(0.01);
    expect(perMinute.parse("6%/h")).toBeCloseTo(0.001);
    expect(perMinute.safeParse("1/min").success).toBe(false);
  });
});

describe("report latency buckets", () => {
  it("puts each call in the power-of-two bucket above it and reads quantiles as bucket bounds", () => {
    expect([0.2, 1, 1.9, 2, 3.9, 4, 1000].map(latencyBucket)).toEqual([0, 1, 1, 2, 2, 3, 10]);
    const buckets: number[] = [];
    for (const ms of [...Array<number>(98).fill(3), 700, 900]) {
      const i = latencyBucket(ms);
      while (buckets.length <= i) buckets.push(0);
      buckets[i]!++;
    }
    expect(bucketQuantile(buckets, 0.5)).toBe(4);
    expect(bucketQuantile(buckets, 0.98)).toBe(4);
    expect(bucketQuantile(buckets, 0.99)).toBe(1024);
    expect(bucketQuantile([], 0.99)).toBeNaN();
  });
});

describe("the simulator's own stalls", () => {
  it("reports how long its event loop was stuck, so a stalled simulator is not taken for a slow coordinator", async () => {
    const opts: SimOptions = {
      join: encodeJoinString({ url: "http://127.0.0.1:9", pin: "A".repeat(43), secret: `tok.${"s".repeat(32)}` }),
      devices: 0, failRate: 0, churnPerMinute: 0, offlineMs: 1000, stepDelayMs: 0, seed: 1,
      metricsIntervalMs: 0, logsIntervalMs: 0, logLines: 0, watchTimeoutMs: 1000, hostnamePrefix: "sim", enrollConcurrency: 1,
    };
    const stop = new AbortController();
    const sent: SliceStats[] = [];
    const running = runSlice({ opts, from: 0, to: 0 }, stop.signal, (s) => sent.push(s));
    try {
      await waitFor("the first counts", () => sent.length > 0 || undefined, 10_000, 10);
      expect(Math.max(...sent.map((s) => s.lagMs ?? -1))).toBeLessThan(400);
      const end = Date.now() + 600;
      while (Date.now() < end); // the simulator's event loop stuck for 600 ms
      const stuck = await waitFor("a stall reported", () => sent.find((s) => (s.lagMs ?? 0) >= 500), 10_000, 10);
      expect(stuck.lagMs).toBeLessThan(2000);
    } finally {
      stop.abort();
      await running;
    }
  });
});

describe("simulated devices' pings", () => {
  it("come every 10 s give or take a fifth, so connections opened together do not ping together", () => {
    expect(simPingIntervalMs(() => 0)).toBe(8000);
    expect(simPingIntervalMs(() => 0.5)).toBe(10_000);
    expect(simPingIntervalMs(() => 0.999999)).toBe(12_000);
    const intervals = Array.from({ length: 4700 }, () => simPingIntervalMs());
    const perSecond = new Map<number, number>();
    for (const ms of intervals) perSecond.set(Math.floor(ms / 1000), (perSecond.get(Math.floor(ms / 1000)) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThan(2000);
  });
});
