import { ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { matchesSelector, parseSelector } from "@flotilla/protocol";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { validateLabels } from "./labels.ts";

const RUNS = 300;
const runs = propertyRuns(RUNS);

const keyChar = fc.constantFrom(..."abzAZ09._/-");
const alnum = fc.constantFrom(..."abzAZ09");
const labelKey = fc.tuple(alnum, fc.string({ unit: keyChar, maxLength: 10 }), alnum).map(([a, mid, z]) => a + mid + z);
const labelValue = fc.string({ unit: fc.constantFrom(..."abzAZ09._:+@-"), maxLength: 12 });

describe("label properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("checks any label map from the network with InvalidArgument or accepts it, never a crash", () => {
    fc.assert(
      fc.property(fc.dictionary(fc.oneof(fc.string({ maxLength: 70 }), labelKey, fc.constantFrom("__proto__", "constructor")), fc.string({ maxLength: 70 }), { maxKeys: 70 }), (labels) => {
        try {
          validateLabels(labels);
        } catch (err) {
          expect(err).toBeInstanceOf(ConnectError);
        }
      }),
      runs,
    );
  });

  it("lets a selector pick every device by any label it accepts", () => {
    fc.assert(
      fc.property(fc.dictionary(labelKey, labelValue, { minKeys: 1, maxKeys: 5 }), fc.nat(), (labels, pick) => {
        validateLabels(labels);
        const [k, v] = Object.entries(labels)[pick % Object.keys(labels).length]!;
        expect(matchesSelector(parseSelector(`${k}=${v}`), labels)).toBe(true);
        expect(matchesSelector(parseSelector(`${k}==${v}`), labels)).toBe(true);
        expect(matchesSelector(parseSelector(k), labels)).toBe(true);
        expect(matchesSelector(parseSelector(`!${k}`), labels)).toBe(false);
        if (v !== "") expect(matchesSelector(parseSelector(`${k} in (${v}, other)`), labels)).toBe(true);
        expect(matchesSelector(parseSelector(`${k}!=${v}`), labels)).toBe(false);
      }),
      runs,
    );
  });
});
