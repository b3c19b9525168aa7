import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "./property-runs.ts";

describe("propertyRuns", () => {
  it("runs the default number of cases unless FLOTILLA_PROPERTY_RUNS asks for more", () => {
    expect(propertyRuns(100, {})).toEqual({ numRuns: 100 });
    expect(propertyRuns(100, { FLOTILLA_PROPERTY_RUNS: "" })).toEqual({ numRuns: 100 });
    expect(propertyRuns(100, { FLOTILLA_PROPERTY_RUNS: "5000" })).toEqual({ numRuns: 5000 });
  });

  it("replays a failure from its seed and path", () => {
    expect(propertyRuns(100, { FLOTILLA_PROPERTY_SEED: "-1484163897", FLOTILLA_PROPERTY_PATH: "15:1:4" })).toEqual({
      numRuns: 100,
      seed: -1484163897,
      path: "15:1:4",
      endOnFailure: true,
    });
  });

  it("refuses a run count or seed that is not a number, rather than running nothing", () => {
    expect(() => propertyRuns(100, { FLOTILLA_PROPERTY_RUNS: "lots" })).toThrow(/FLOTILLA_PROPERTY_RUNS/);
    expect(() => propertyRuns(100, { FLOTILLA_PROPERTY_RUNS: "0" })).toThrow(/FLOTILLA_PROPERTY_RUNS/);
    expect(() => propertyRuns(100, { FLOTILLA_PROPERTY_SEED: "x" })).toThrow(/FLOTILLA_PROPERTY_SEED/);
  });

  it("scales a test's time limit with the runs asked for", () => {
    expect(propertyTimeout(30_000, 100, {})).toBe(30_000);
    expect(propertyTimeout(30_000, 100, { FLOTILLA_PROPERTY_RUNS: "1000" })).toBe(300_000);
    expect(propertyTimeout(30_000, 100, { FLOTILLA_PROPERTY_RUNS: "10" })).toBe(30_000);
  });
});
