import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "../property-runs.ts";
import { formatSelector, matchesSelector, parseSelector, SelectorError, type Requirement, type Selector } from "./selector.ts";

const RUNS = 300;
const runs = propertyRuns(RUNS);

const KEY_CHARS = [..."abcxyzAZ09._/-"];
const VALUE_CHARS = [...KEY_CHARS, ":", "+", "@"];
const key = fc.string({ unit: fc.constantFrom(...KEY_CHARS), minLength: 1, maxLength: 12 });
const value = fc.string({ unit: fc.constantFrom(...VALUE_CHARS), maxLength: 12 });
const nonEmptyValue = fc.string({ unit: fc.constantFrom(...VALUE_CHARS), minLength: 1, maxLength: 12 });
const valueSet = fc.uniqueArray(nonEmptyValue, { minLength: 1, maxLength: 5 }).map((vs) => vs.sort());

const requirement: fc.Arbitrary<Requirement> = fc.oneof(
  fc.record({ op: fc.constant("equals" as const), key, value }),
  fc.record({ op: fc.constant("notEquals" as const), key, value }),
  fc.record({ op: fc.constant("in" as const), key, values: valueSet }),
  fc.record({ op: fc.constant("notIn" as const), key, values: valueSet }),
  fc.record({ op: fc.constant("exists" as const), key }),
  fc.record({ op: fc.constant("notExists" as const), key }),
);
const selector: fc.Arbitrary<Selector> = fc.record({ requirements: fc.array(requirement, { maxLength: 8 }) });

/** Text made of the selector grammar's own pieces, so that many inputs get deep into the parser. */
const selectorish = fc
  .array(fc.oneof(fc.constantFrom("a", "b.c/d", "=", "==", "!=", "!", ",", " ", "in", "notin", "(", ")", "x:y", "\t", "\u0000", "é"), fc.string({ maxLength: 3 })), { maxLength: 30 })
  .map((parts) => parts.join(""));

describe("selector properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("parses any text to a selector or throws a SelectorError pointing inside the text", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 60 }), selectorish), (text) => {
        try {
          parseSelector(text);
        } catch (err) {
          expect(err).toBeInstanceOf(SelectorError);
          const { position } = err as SelectorError;
          expect(position).toBeGreaterThanOrEqual(0);
          expect(position).toBeLessThanOrEqual(text.length);
        }
      }),
      runs,
    );
  });

  it("reads back what formatSelector writes, and formats what it parsed the same way again", () => {
    fc.assert(
      fc.property(selector, (sel) => {
        const text = formatSelector(sel);
        expect(parseSelector(text)).toEqual(sel);
      }),
      runs,
    );
    fc.assert(
      fc.property(selectorish, (text) => {
        let sel: Selector;
        try {
          sel = parseSelector(text);
        } catch {
          return;
        }
        expect(parseSelector(formatSelector(sel))).toEqual(sel);
      }),
      runs,
    );
  });

  it("refuses a key or value with a character outside the grammar", () => {
    const bad = fc.constantFrom("$", "*", ";", "'", '"', "|", "&", "{", "<", "é", "\u0000", "#", "%");
    fc.assert(
      fc.property(key, bad, key, (before, c, after) => {
        expect(() => parseSelector(`${before}${c}${after}=v`)).toThrow(SelectorError);
        expect(() => parseSelector(`k=${before}${c}${after}`)).toThrow(SelectorError);
        expect(() => parseSelector(`k in (${before}${c}${after})`)).toThrow(SelectorError);
      }),
      runs,
    );
  });

  it("matches a device by each requirement's meaning, also for keys such as constructor", () => {
    const fields = fc.dictionary(fc.oneof(key, fc.constantFrom("constructor", "__proto__", "toString")), nonEmptyValue, { maxKeys: 6 });
    fc.assert(
      fc.property(selector, fields, (sel, f) => {
        const has = (k: string) => Object.hasOwn(f, k);
        const expected = sel.requirements.every((r) => {
          switch (r.op) {
            case "equals":
              return has(r.key) && f[r.key] === r.value;
            case "notEquals":
              return !has(r.key) || f[r.key] !== r.value;
            case "in":
              return has(r.key) && r.values.includes(f[r.key]!);
            case "notIn":
              return !has(r.key) || !r.values.includes(f[r.key]!);
            case "exists":
              return has(r.key);
            case "notExists":
              return !has(r.key);
          }
        });
        expect(matchesSelector(sel, f)).toBe(expected);
      }),
      runs,
    );
  });
});
