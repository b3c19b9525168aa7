import { describe, expect, it } from "vitest";
import { parseReleaseMeta } from "./release.ts";

const base = { name: "kiosk", version: "1", counter: 1, kind: "nixos", storePath: `/nix/store/${"a".repeat(32)}-nixos-system` };

describe("release metadata: systemd units", () => {
  it("takes the units a NixOS release declares, and leaves the field out when there are none (older agents refuse unknown fields)", () => {
    expect(parseReleaseMeta({ ...base, units: ["kiosk.service", "getty@tty1.service"] }).units).toEqual(["kiosk.service", "getty@tty1.service"]);
    expect("units" in parseReleaseMeta(base)).toBe(false);
  });

  it("refuses unit names that are not systemd units", () => {
    for (const bad of ["kiosk", "../x.service", "a b.service", "-x;rm.service", ""]) {
      expect(() => parseReleaseMeta({ ...base, units: [bad] })).toThrow(/invalid release metadata: units\.0/);
    }
    expect(() => parseReleaseMeta({ ...base, units: [] })).toThrow(/units/);
  });
});
