import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConfigError, MAX_DELAY_MS } from "@flotilla/protocol";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { loadFromEnv, numberish } from "@flotilla/protocol/testing/config";
import { agentOptionSpecs } from "./config.ts";

const RUNS = 300;
const runs = propertyRuns(RUNS);

const specs = Object.entries(agentOptionSpecs);
const delays = specs.filter(([, s]) => s.key.endsWith("_ms"));
const sizes = specs.filter(([, s]) => s.key.endsWith("_bytes") || s.key.endsWith("_bytes_per_second"));

const loadWith = (env: Record<string, string>) => loadFromEnv(agentOptionSpecs, env);

describe("agent config properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("accepts only delays a timer can wait for, so no interval or timeout fires at once", () => {
    expect(delays.length).toBeGreaterThan(4);
    fc.assert(
      fc.property(fc.constantFrom(...delays.map(([n]) => n)), numberish, (name, text) => {
        const spec = agentOptionSpecs[name as keyof typeof agentOptionSpecs];
        const got = loadWith({ [spec.env]: text });
        if (got instanceof ConfigError) {
          expect(got.message).toContain(spec.env);
          return;
        }
        const v = got[name] as number | undefined;
        // An optional delay left unset (an empty variable) falls back to one derived from others.
        if (v === undefined && !("default" in spec)) return;
        expect(Number.isSafeInteger(v) && v! > 0 && v! <= MAX_DELAY_MS).toBe(true);
      }),
      // Found by this property: a timer given more than 2^31-1 ms fires after 1 ms.
      { ...runs, examples: [["watchTimeoutMs", "3000000000"], ["factsIntervalMs", "0x80000000"]] },
    );
  });

  it("accepts only whole, non-negative byte counts", () => {
    fc.assert(
      fc.property(fc.constantFrom(...sizes.map(([n]) => n)), numberish, (name, text) => {
        const spec = agentOptionSpecs[name as keyof typeof agentOptionSpecs];
        const got = loadWith({ [spec.env]: text });
        if (got instanceof ConfigError) return;
        const v = got[name] as number;
        expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
      }),
      runs,
    );
  });

  it("refuses any option from the environment with a ConfigError naming it, or loads it", () => {
    fc.assert(
      fc.property(fc.constantFrom(...specs.map(([n]) => n)), fc.oneof(fc.string(), numberish), (name, text) => {
        const spec = agentOptionSpecs[name as keyof typeof agentOptionSpecs];
        const got = loadWith({ [spec.env]: text });
        if (got instanceof ConfigError) expect(got.message).toContain(spec.env);
      }),
      runs,
    );
  });
});
