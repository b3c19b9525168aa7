import { describe, expect, it } from "vitest";
import { loopbackSourceAddress } from "./device.ts";

describe("loopbackSourceAddress", () => {
  it("gives each of 20,000 devices its own loopback address when the coordinator is on 127.0.0.0/8", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      const a = loopbackSourceAddress("http://127.0.0.1:7411", i)!;
      expect(a).toMatch(/^127\.(\d+)\.(\d+)\.(\d+)$/);
      expect(a.split(".").every((o) => Number(o) <= 255)).toBe(true);
      seen.add(a);
    }
    expect(seen.size).toBe(20_000);
  });

  it("leaves the source address to the system for any other coordinator", () => {
    expect(loopbackSourceAddress("https://fleet.example.com", 3)).toBeUndefined();
    expect(loopbackSourceAddress("http://[::1]:7411", 3)).toBeUndefined();
    expect(loopbackSourceAddress("https://10.0.0.2:7411", 3)).toBeUndefined();
  });
});
