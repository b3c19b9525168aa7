import { describe, expect, it } from "vitest";
import {
  formatSelector,
  MAX_SELECTOR_LENGTH,
  MAX_SELECTOR_REQUIREMENTS,
  matchesSelector,
  parseSelector,
  SelectorError,
} from "./selector.ts";

const device = { env: "prod", arch: "x86_64", "nixos.version": "24.05", rack: "" };

function matches(text: string, fields: Record<string, string> = device): boolean {
  return matchesSelector(parseSelector(text), fields);
}

function errorOf(text: string): SelectorError {
  try {
    parseSelector(text);
  } catch (err) {
    if (err instanceof SelectorError) return err;
    throw err;
  }
  throw new Error(`expected ${JSON.stringify(text)} to be refused`);
}

describe("parseSelector", () => {
  it("parses every kind of requirement into its own variant", () => {
    expect(parseSelector("a=1,b==2,c!=3,d in (x,y),e notin (z),f,!g").requirements).toEqual([
      { op: "equals", key: "a", value: "1" },
      { op: "equals", key: "b", value: "2" },
      { op: "notEquals", key: "c", value: "3" },
      { op: "in", key: "d", values: ["x", "y"] },
      { op: "notIn", key: "e", values: ["z"] },
      { op: "exists", key: "f" },
      { op: "notExists", key: "g" },
    ]);
  });

  it("allows whitespace around every token", () => {
    expect(parseSelector("  a = 1 , b != 2 ,\td  in  ( x , y ) , ! g  ")).toEqual(
      parseSelector("a=1,b!=2,d in (x,y),!g"),
    );
  });

  it("accepts dots, dashes, underscores and slashes in keys and colons, plus and at in values", () => {
    expect(parseSelector("flotilla.dev/role_x-1=a:b+c@d.e/f_g-h").requirements).toEqual([
      { op: "equals", key: "flotilla.dev/role_x-1", value: "a:b+c@d.e/f_g-h" },
    ]);
  });

  it("accepts an empty value after = and !=", () => {
    expect(parseSelector("a=,b!=").requirements).toEqual([
      { op: "equals", key: "a", value: "" },
      { op: "notEquals", key: "b", value: "" },
    ]);
  });

  it("sorts and deduplicates the values of a set", () => {
    expect(parseSelector("arch in (x86_64,aarch64,x86_64)").requirements).toEqual([
      { op: "in", key: "arch", values: ["aarch64", "x86_64"] },
    ]);
  });

  it("reads in and notin as keys when no set follows", () => {
    expect(parseSelector("in,!notin").requirements).toEqual([
      { op: "exists", key: "in" },
      { op: "notExists", key: "notin" },
    ]);
  });

  it("reads an empty or blank selector as no requirements", () => {
    expect(parseSelector("")).toEqual({ requirements: [] });
    expect(parseSelector(" \t ")).toEqual({ requirements: [] });
  });

  it("points at the end of input when a set is not closed", () => {
    const err = errorOf("env=prod,arch in (x86_64");
    expect(err.position).toBe(24);
    expect(err.message).toBe(
      [
        "invalid selector: expected ',' or ')' at column 25",
        "  env=prod,arch in (x86_64",
        "                          ^",
      ].join("\n"),
    );
  });

  it("points at the offending character in the middle of the text", () => {
    const err = errorOf("env=prod,ar$ch=x");
    expect(err.position).toBe(11);
    expect(err.message).toBe(
      [
        "invalid selector: expected '=', '==', '!=', 'in', 'notin', ',' or end of input at column 12",
        "  env=prod,ar$ch=x",
        "             ^",
      ].join("\n"),
    );
  });

  it.each([
    ["=prod", 0, "expected a key"],
    ["env=prod,", 9, "expected a key"],
    ["a,,b", 2, "expected a key"],
    ["!=x", 1, "expected a key"],
    ["a:b=c", 1, "expected '=', '==', '!=', 'in', 'notin', ',' or end of input"],
    ["env prod", 4, "expected '=', '==', '!=', 'in', 'notin', ',' or end of input"],
    ["env=pr od", 7, "expected ',' or end of input"],
    ["env=prod)", 8, "expected ',' or end of input"],
    ["env===x", 5, "expected ',' or end of input"],
    ["!env=prod", 4, "expected ',' or end of input"],
    ["a!b", 2, "expected '=' after '!'"],
    ["a in x", 5, "expected '('"],
    ["a in", 4, "expected '('"],
    ["a in ()", 6, "expected a value"],
    ["a in (x,)", 8, "expected a value"],
    ["a notin (x y)", 11, "expected ',' or ')'"],
    ["a in (x)y", 8, "expected ',' or end of input"],
    ["A IN (x)", 2, "expected '=', '==', '!=', 'in', 'notin', ',' or end of input"],
  ])("refuses %j at position %i: %s", (text, position, problem) => {
    const err = errorOf(text);
    expect(err.position).toBe(position);
    expect(err.message.split("\n")[0]).toBe(`invalid selector: ${problem} at column ${position + 1}`);
  });

  it("shows control characters as spaces so the caret stays aligned", () => {
    const err = errorOf("a=1,\nb=\u0007");
    expect(err.position).toBe(7);
    expect(err.message.split("\n").slice(1)).toEqual(["  a=1, b= ", "         ^"]);
  });

  it("shows only a window of a long selector around the offending character", () => {
    const text = "a".repeat(1000) + "$" + "b".repeat(1000);
    const lines = errorOf(text).message.split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[1]!.length).toBeLessThan(140);
    expect(lines[1]![lines[2]!.indexOf("^")]).toBe("$");
    expect(lines[1]).toMatch(/^ {2}\.\.\.a+\$b+\.\.\.$/);
  });

  it("refuses text longer than the length limit, pointing just past the limit", () => {
    const ok = "k=" + "v".repeat(MAX_SELECTOR_LENGTH - 2);
    expect(parseSelector(ok).requirements).toHaveLength(1);
    const err = errorOf(ok + "v");
    expect(err.position).toBe(MAX_SELECTOR_LENGTH);
    expect(err.message).toMatch(/^invalid selector: longer than 4096 characters at column 4097\n/);
  });

  it("refuses more requirements than the limit, pointing at the first one too many", () => {
    const keys = Array.from({ length: MAX_SELECTOR_REQUIREMENTS }, (_, i) => `k${i}`);
    expect(parseSelector(keys.join(",")).requirements).toHaveLength(MAX_SELECTOR_REQUIREMENTS);
    const text = [...keys, "extra"].join(",");
    const err = errorOf(text);
    expect(err.position).toBe(text.indexOf("extra"));
    expect(err.message).toMatch(/^invalid selector: more than 100 requirements at column/);
  });

  it("is an Error named SelectorError", () => {
    const err = errorOf("=");
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe("SelectorError");
  });
});

describe("matchesSelector", () => {
  it("selects everything with an empty selector", () => {
    expect(matches("")).toBe(true);
    expect(matches("", {})).toBe(true);
  });

  it("matches equality on exact values only", () => {
    expect(matches("env=prod")).toBe(true);
    expect(matches("env==prod")).toBe(true);
    expect(matches("env=pro")).toBe(false);
    expect(matches("nixos.version=24.05")).toBe(true);
    expect(matches("missing=prod")).toBe(false);
  });

  it("matches inequality when the value differs or the key is absent", () => {
    expect(matches("env!=staging")).toBe(true);
    expect(matches("env!=prod")).toBe(false);
    expect(matches("missing!=prod")).toBe(true);
  });

  it("matches an empty value only against a present, empty field", () => {
    expect(matches("rack=")).toBe(true);
    expect(matches("env=")).toBe(false);
    expect(matches("missing=")).toBe(false);
    expect(matches("rack!=")).toBe(false);
    expect(matches("missing!=")).toBe(true);
  });

  it("matches in only when the key is present with one of the values", () => {
    expect(matches("arch in (aarch64,x86_64)")).toBe(true);
    expect(matches("arch in (aarch64,riscv64)")).toBe(false);
    expect(matches("missing in (x86_64)")).toBe(false);
  });

  it("matches notin when the value is outside the set or the key is absent", () => {
    expect(matches("arch notin (aarch64)")).toBe(true);
    expect(matches("arch notin (x86_64)")).toBe(false);
    expect(matches("missing notin (x86_64)")).toBe(true);
  });

  it("matches existence regardless of the value, even an empty one", () => {
    expect(matches("env")).toBe(true);
    expect(matches("rack")).toBe(true);
    expect(matches("missing")).toBe(false);
    expect(matches("!missing")).toBe(true);
    expect(matches("!rack")).toBe(false);
  });

  it("requires every requirement to hold", () => {
    expect(matches("env=prod,arch=x86_64,!decommissioned")).toBe(true);
    expect(matches("env=prod,arch=aarch64")).toBe(false);
    expect(matches("env=prod,env=staging")).toBe(false);
  });

  it("does not see Object.prototype members as fields", () => {
    expect(matches("constructor")).toBe(false);
    expect(matches("!toString")).toBe(true);
    expect(matches("__proto__ notin (x)")).toBe(true);
  });
});

describe("formatSelector", () => {
  it("writes canonical text without optional whitespace and with = for ==", () => {
    expect(formatSelector(parseSelector(" env == prod , arch in ( x86_64 , aarch64 ) , ! old , b != , x notin (1)"))).toBe(
      "env=prod,arch in (aarch64,x86_64),!old,b!=,x notin (1)",
    );
  });

  it("writes an empty selector as empty text", () => {
    expect(formatSelector({ requirements: [] })).toBe("");
  });

  it("round-trips through parseSelector", () => {
    const texts = ["env=prod", "a!=,b in (x),c notin (y,z),d,!e", "k.io/x=a:b+c@d"];
    for (const text of texts) {
      const sel = parseSelector(text);
      expect(parseSelector(formatSelector(sel))).toEqual(sel);
      expect(formatSelector(sel)).toBe(text);
    }
  });
});
