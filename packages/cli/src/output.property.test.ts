import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { UsageError } from "./errors.ts";
import { parseDuration, parseLabels } from "./output.ts";

const RUNS = 500;
const runs = propertyRuns(RUNS);
const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const unit = fc.constantFrom("s", "m", "h", "d") as fc.Arbitrary<keyof typeof UNIT_MS>;

/** Duration-looking text: digits (many of them), units, signs, dots, exponents, spaces. */
const durationish = fc
  .array(fc.oneof(fc.constantFrom("0", "1", "9", "99999", "s", "m", "h", "d", "ms", "-", "+", ".", "e", " ", "\t", "1e3", "Infinity", "٣"), fc.string({ maxLength: 2 })), { maxLength: 12 })
  .map((parts) => parts.join(""));
const digits = fc.string({ unit: fc.constantFrom(..."0123456789"), minLength: 1, maxLength: 40 });

describe("duration properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("turns any text into a whole number of ms that timestamps and BigInt can hold, or a UsageError", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), durationish, fc.tuple(digits, unit).map(([n, u]) => n + u)), (text) => {
        let ms: number;
        try {
          ms = parseDuration(text);
        } catch (err) {
          expect(err).toBeInstanceOf(UsageError);
          expect((err as Error).message).not.toContain("\n");
          return;
        }
        expect(Number.isSafeInteger(ms) && ms >= 0).toBe(true);
        // What the commands do with it: a protobuf int64, an expiry or a "since" timestamp.
        expect(BigInt(ms)).toBeGreaterThanOrEqual(0n);
        expect(() => new Date(Date.now() + ms).toISOString()).not.toThrow();
        expect(() => new Date(Date.now() - ms).toISOString()).not.toThrow();
      }),
      // Found by this property: past a Date's range, and Infinity (which BigInt refuses).
      { ...runs, examples: [["9000000000h"], ["9".repeat(400) + "d"]] },
    );
  });

  it("reads N followed by a unit as N times the unit, for the durations one can mean", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 36_500 }), unit, fc.constantFrom("", " ", "\n"), (n, u, pad) => {
        expect(parseDuration(`${pad}${n}${u}${pad}`)).toBe(n * UNIT_MS[u]);
      }),
      runs,
    );
  });

  it("refuses negative, fractional, unitless and exponent forms", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1000 }), unit, (n, u) => {
        for (const bad of [`-${n}${u}`, `${n}.5${u}`, `${n}`, `${n}e3${u}`, `${n} ${u}`, `+${n}${u}`, `${n}${u}${u}`]) {
          expect(() => parseDuration(bad)).toThrow(UsageError);
        }
      }),
      runs,
    );
  });
});

describe("label list properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("reads back k=v lists it is given, and refuses an item without a key with a UsageError", () => {
    const part = fc.string({ unit: fc.constantFrom(..."abz09._/-:"), minLength: 1, maxLength: 8 });
    fc.assert(
      fc.property(fc.dictionary(part, fc.string({ unit: fc.constantFrom(..."abz09._/-:="), maxLength: 8 }), { maxKeys: 5 }), (labels) => {
        const text = Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",");
        expect(parseLabels(text)).toEqual(labels);
      }),
      runs,
    );
    fc.assert(
      fc.property(fc.string(), (text) => {
        try {
          parseLabels(text);
        } catch (err) {
          expect(err).toBeInstanceOf(UsageError);
        }
      }),
      runs,
    );
  });
});
