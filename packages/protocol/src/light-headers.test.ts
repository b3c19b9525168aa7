import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { installLightHeaders, LightHeaders } from "./light-headers.ts";

const NodeHeaders = globalThis.Headers;

const name = fc.oneof(
  fc.constantFrom("content-type", "Content-Type", "grpc-status", "Set-Cookie", "set-cookie", "x-a", "X-A", "authorization"),
  fc.constantFrom("bad name", "", "x:y", "ü", "a\n"),
);
const value = fc.oneof(
  fc.constantFrom("application/proto", "  padded\t", "a, b", "", "0", "v=1; Path=/"),
  fc.constantFrom("bad\nvalue", "nul\0", "\u0100wide", "\r\n", "latin é"),
  fc.string({ maxLength: 8 }),
);
const op = fc.oneof(
  fc.tuple(fc.constant("append" as const), name, value),
  fc.tuple(fc.constant("set" as const), name, value),
  fc.tuple(fc.constant("delete" as const), name),
  fc.tuple(fc.constant("get" as const), name),
  fc.tuple(fc.constant("has" as const), name),
);
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

/** Runs `fn`; the value it returns, or that it threw a TypeError. */
function outcome(fn: () => unknown): unknown {
  try {
    return { value: fn() };
  } catch (err) {
    return { threw: err instanceof TypeError ? "TypeError" : String(err) };
  }
}

/** Applies `ops` to a headers object; what each returned, then its entries and cookies. */
function trace(h: { [k: string]: unknown } & Iterable<[string, string]>, ops: Op[]): unknown[] {
  const call = h as unknown as Record<string, (...a: string[]) => unknown>;
  const out = ops.map(([method, ...args]) => outcome(() => call[method]!.call(h, ...args)));
  const each: [string, string][] = [];
  (h as unknown as Headers).forEach((v, k) => each.push([k, v]));
  return [...out, [...h], each, (h as unknown as Headers).getSetCookie(), [...(h as unknown as Headers).keys()]];
}

describe("LightHeaders", () => {
  it("answers every sequence of calls as Node's Headers does, errors included", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        expect(trace(new LightHeaders() as never, ops)).toEqual(trace(new NodeHeaders() as never, ops));
      }),
      { numRuns: 500 },
    );
  });

  it("takes a record, a list of pairs or another Headers as Node's does, and refuses what it refuses", () => {
    const init = fc.oneof(
      fc.dictionary(fc.oneof(name, fc.string({ maxLength: 4 })), value, { maxKeys: 6 }),
      fc.array(fc.tuple(name, value), { maxLength: 6 }),
      fc.array(fc.array(fc.constantFrom("a", "b"), { maxLength: 3 }), { maxLength: 3 }),
    );
    fc.assert(
      fc.property(init, (i) => {
        const light = outcome(() => [...new LightHeaders(i as never)]);
        expect(light).toEqual(outcome(() => [...new NodeHeaders(i as never)]));
        // Built from each other's objects, the two still agree (with Node's built from its own:
        // a copy trims joined values again, "" and "" joined is ", " and copied is ",").
        const node = outcome(() => new NodeHeaders(i as never));
        if ("value" in (node as object)) {
          const n = (node as { value: Headers }).value;
          const copy = [...new NodeHeaders(n)];
          expect([...new LightHeaders(n as never)]).toEqual(copy);
          expect([...new NodeHeaders(new LightHeaders(i as never) as never)]).toEqual(copy);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("is installed only where Node's class has not been loaded", async () => {
    // This test process touched Node's Headers above: its global stays as it is.
    expect(installLightHeaders()).toBe(false);
    expect(globalThis.Headers).toBe(NodeHeaders);
    // A fresh process, as `flotilla agent` is when it starts, gets the light class and never
    // loads undici for Connect's calls.
    const script = `
      const { installLightHeaders } = await import(${JSON.stringify(new URL("./light-headers.ts", import.meta.url).href)});
      const installed = installLightHeaders();
      const h = new Headers({ "Content-Type": "application/proto" });
      h.append("x-a", "1");
      console.log(JSON.stringify({ installed, name: Headers.name, entries: [...h], undici: process.moduleLoadList.some((m) => m.includes("undici")) }));
    `;
    const tsx = createRequire(import.meta.url).resolve("tsx");
    const out = execFileSync(process.execPath, ["--import", pathToFileURL(tsx).href, "--input-type=module", "-e", script], { encoding: "utf8" });
    expect(JSON.parse(out)).toEqual({ installed: true, name: "LightHeaders", entries: [["content-type", "application/proto"], ["x-a", "1"]], undici: false });
  });
});
