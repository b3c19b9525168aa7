import { describe, expect, it } from "vitest";
import { tunnelCapabilities, tunnelPortsSchema } from "./ports.ts";

describe("the agent's tunnel allowlist", () => {
  it("reads a comma-separated list from a flag or variable, and an array from TOML", () => {
    expect(tunnelPortsSchema.parse("8080, 22,22")).toEqual([22, 8080]);
    expect(tunnelPortsSchema.parse([443, "22"])).toEqual([22, 443]);
  });

  it("turns tunnels off with none, and then reports no tunnel capability", () => {
    expect(tunnelPortsSchema.parse("none")).toEqual([]);
    expect(tunnelCapabilities([])).toEqual([]);
    expect(tunnelCapabilities([22])).toEqual(["tunnel"]);
  });

  it("refuses a port outside 1 to 65535 or something that is not a port", () => {
    for (const bad of ["0", "65536", "ssh", "22,", "-1", [1.5]]) {
      expect(tunnelPortsSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
    }
  });
});
