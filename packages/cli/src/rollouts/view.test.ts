import { create } from "@bufbuild/protobuf";
import { adminv1 } from "@flotilla/protocol";
import { describe, expect, it } from "vitest";
import { watchFrame } from "./view.ts";

function rollout(waves: number, devices: { name: string; state: string; error?: string }[], currentWave = 1) {
  return create(adminv1.RolloutSchema, {
    id: "ro_test",
    status: "running",
    currentWave,
    spec: { releaseName: "webapp", releaseVersion: "1.5.0" },
    waves: Array.from({ length: waves }, (_, i) => ({ number: i + 1, entry: i + 1 === waves ? "100%" : String(i + 1), total: 3, healthy: 1, failed: 1, inProgress: 1 })),
    devices: devices.map((d) => ({ deviceId: `dev_${d.name}`, name: d.name, wave: currentWave, state: d.state, error: d.error ?? "" })),
  });
}

describe("watchFrame", () => {
  it("lists only the devices installing, and counts those that do not fit the screen", () => {
    const devices = [
      { name: "failed-1", state: "failed", error: "health check failed: exit status 1" },
      { name: "done-1", state: "healthy" },
      ...Array.from({ length: 30 }, (_, i) => ({ name: `sw-${String(i).padStart(2, "0")}`, state: "downloading" })),
    ];
    const frame = watchFrame(rollout(3, devices), 80, 24);
    expect(frame).toHaveLength(23);
    expect(frame.slice(4, -1).every((l) => /^ {4}sw-\d\d /.test(l))).toBe(true);
    expect(frame.at(-1)).toBe(`    +${30 - 18} more installing`);
    expect(frame.join("\n")).not.toMatch(/failed-1|done-1/);
  });

  it("cuts every line to the terminal's width less one, so no line wraps", () => {
    const frame = watchFrame(rollout(3, [{ name: "a-device-with-a-rather-long-name-indeed", state: "rolling-back", error: "returning to 1.4.0 (#3)" }]), 40, 24);
    expect(frame.length).toBe(5);
    for (const l of frame) expect(l.length).toBeLessThanOrEqual(39);
  });

  it("keeps many waves within half the screen, showing the current one", () => {
    const frame = watchFrame(rollout(30, [{ name: "sw-01", state: "activating" }], 12), 80, 24);
    expect(frame.length).toBeLessThanOrEqual(23);
    expect(frame[1]).toBe("  11 earlier waves, 9 later");
    expect(frame[2]).toMatch(/^> wave 12 /);
    expect(frame.at(-1)).toMatch(/^ {4}sw-01 +wave 12 {2}activating$/);
  });
});
