import { parseSelector } from "@flotilla/protocol";
import { describe, expect, it } from "vitest";
import { planRollout, type PlanDevice } from "./plan.ts";
import { parseThreshold, parseWaves, toleratedFailures, waveSizes } from "./waves.ts";

function dev(name: string, over: Partial<PlanDevice> = {}): PlanDevice {
  return {
    id: `dev_${name}`,
    name,
    lifecycle: "approved",
    fields: { env: "prod", arch: "x86_64" },
    arch: "x86_64",
    capabilities: ["release:bundle"],
    online: true,
    healthy: true,
    ...over,
  };
}

const req = { capability: "release:bundle", arch: ["x86_64"] };
const all = parseSelector("");

describe("wave specifications", () => {
  it("accepts cumulative counts then percentages ending at 100%", () => {
    expect(parseWaves(["1", "10%", "50%", "100%"]).map((w) => w.text)).toEqual(["1", "10%", "50%", "100%"]);
  });

  it("refuses waves that do not end at 100%, naming the entry", () => {
    expect(() => parseWaves(["1", "50%"])).toThrow(/last wave must be 100%.*"50%"/);
  });

  it("refuses percentages that do not strictly increase, naming the entry", () => {
    expect(() => parseWaves(["50%", "10%", "100%"])).toThrow(/wave 2 \("10%"\).*strictly increase/);
  });

  it("refuses a zero, an over-100 percentage and garbage", () => {
    expect(() => parseWaves(["0", "100%"])).toThrow(/wave 1/);
    expect(() => parseWaves(["150%"])).toThrow(/between 1% and 100%/);
    expect(() => parseWaves(["ten", "100%"])).toThrow(/wave 1 \("ten"\)/);
    expect(() => parseWaves([])).toThrow(/at least one wave/);
  });

  it("rounds percentages up and drops waves that would add no device", () => {
    const w = parseWaves(["1", "10%", "50%", "100%"]);
    expect(waveSizes(w, 20)).toEqual([
      { entry: "1", size: 1 },
      { entry: "10%", size: 1 },
      { entry: "50%", size: 8 },
      { entry: "100%", size: 10 },
    ]);
    expect(waveSizes(w, 3)).toEqual([
      { entry: "1", size: 1 },
      { entry: "50%", size: 1 },
      { entry: "100%", size: 1 },
    ]);
    expect(waveSizes(w, 0)).toEqual([]);
  });

  it("reads failure thresholds as counts or shares of the rollout", () => {
    expect(parseThreshold("5%")).toEqual({ percent: 5 });
    expect(toleratedFailures("5%", 20)).toBe(1);
    expect(toleratedFailures("2", 20)).toBe(2);
    expect(toleratedFailures("", 20)).toBe(0);
    expect(() => parseThreshold("lots")).toThrow(/invalid failure threshold/);
  });
});

describe("rollout plans", () => {
  it("puts online healthy devices first, then by name, and offline devices last", () => {
    const devices = [dev("c"), dev("a", { online: false }), dev("b"), dev("d", { healthy: false }), dev("e")];
    const plan = planRollout(devices, all, req, parseWaves(["1", "50%", "100%"]));
    expect(plan.waves.map((w) => w.devices.map((d) => d.name))).toEqual([["b"], ["c", "e"], ["d", "a"]]);
    expect(plan.offline.map((d) => d.name)).toEqual(["a"]);
    expect(plan.total).toBe(5);
  });

  it("lists apart devices of the wrong arch, without the capability or not approved", () => {
    const devices = [
      dev("ok"),
      dev("arm", { arch: "aarch64" }),
      dev("nix", { capabilities: ["release:nixos"] }),
      dev("new", { lifecycle: "pending" }),
      dev("other", { fields: { env: "dev" } }),
    ];
    const plan = planRollout(devices, parseSelector("env=prod"), req, parseWaves(["100%"]));
    expect(plan.waves.flatMap((w) => w.devices.map((d) => d.name))).toEqual(["ok"]);
    expect(plan.ineligible.map((i) => [i.device.name, i.reason])).toEqual([
      ["arm", "arch aarch64 not in x86_64"],
      ["new", "device is pending"],
      ["nix", "missing capability release:bundle"],
    ]);
  });

  it("says why an agent release cannot go to an agent that does not update itself", () => {
    const devices = [dev("launched", { capabilities: ["release:bundle", "release:agent"] }), dev("plain")];
    const plan = planRollout(devices, all, { capability: "release:agent", arch: [] }, parseWaves(["100%"]));
    expect(plan.waves.flatMap((w) => w.devices.map((d) => d.name))).toEqual(["launched"]);
    expect(plan.ineligible.map((i) => [i.device.name, i.reason])).toEqual([
      ["plain", "missing capability release:agent: this agent cannot update itself (it runs without self_update, or is older than self-update)"],
    ]);
  });

  it("gives the same assignment whatever order the devices come in", () => {
    const devices = Array.from({ length: 30 }, (_, i) => dev(`d${String(i).padStart(2, "0")}`, { online: i % 7 !== 0 }));
    const waves = parseWaves(["1", "10%", "100%"]);
    const a = planRollout(devices, all, req, waves);
    const b = planRollout([...devices].reverse(), all, req, waves);
    expect(b.waves.map((w) => w.devices.map((d) => d.id))).toEqual(a.waves.map((w) => w.devices.map((d) => d.id)));
  });
});
