import { describe, expect, it } from "vitest";
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
