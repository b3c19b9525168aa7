import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConfigError, MAX_DELAY_MS } from "@flotilla/protocol";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { loadFromEnv, numberish } from "@flotilla/protocol/testing/config";
import { coordinatorOptionSpecs } from "./config.ts";

const RUNS = 300;
const runs = propertyRuns(RUNS);

/** Options the coordinator hands to setTimeout or setInterval (the other *_ms ones are ages and TTLs). */
const TIMER_OPTIONS = ["keepaliveMs", "tufRefreshMs"] as const;

const loadWith = (env: Record<string, string>) => loadFromEnv(coordinatorOptionSpecs, env);

describe("coordinator config properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("accepts only timer delays a timer can wait for, so keep-alives and TUF refreshes never spin", () => {
    fc.assert(
      fc.property(fc.constantFrom(...TIMER_OPTIONS), numberish, (name, text) => {
        const spec = coordinatorOptionSpecs[name];
        const got = loadWith({ [spec.env]: text });
        if (got instanceof ConfigError) return;
        const v = got[name] as number;
        expect(Number.isSafeInteger(v) && v > 0 && v <= MAX_DELAY_MS).toBe(true);
      }),
      // Found by this property: a timer given more than 2^31-1 ms fires after 1 ms.
      { ...runs, examples: [["keepaliveMs", "2147483648"], ["tufRefreshMs", "3000000000"]] },
    );
  });

  it("accepts as --internal-url only an http(s) URL that is a host and port, nothing else", () => {
    const spec = coordinatorOptionSpecs.internalUrl;
    const url = fc.oneof(fc.webUrl({ withQueryParameters: true, withFragments: true }), fc.webUrl(), fc.string());
    fc.assert(
      fc.property(url, (text) => {
        // An empty variable counts as unset.
        fc.pre(text !== "");
        const got = loadWith({ [spec.env]: text });
        if (got instanceof ConfigError) {
          expect(got.message).toMatch(/^invalid value for FLOTILLA_INTERNAL_URL \(environment variable\): /);
          expect(got.message.split("\n")).toHaveLength(1);
          return;
        }
        const u = new URL(got.internalUrl!);
        expect(["http:", "https:"]).toContain(u.protocol);
        expect(u.pathname + u.search + u.hash + u.username + u.password).toBe("/");
      }),
      { ...runs, examples: [["https://a.b:7700"], ["https://a.b/x"], ["http://a.b:80"]] },
    );
  });

  it("loads any option from the environment or refuses it with a ConfigError naming it", () => {
    const names = Object.keys(coordinatorOptionSpecs) as (keyof typeof coordinatorOptionSpecs)[];
    fc.assert(
      fc.property(fc.constantFrom(...names), fc.oneof(fc.string(), numberish), (name, text) => {
        const spec = coordinatorOptionSpecs[name];
        const got = loadWith({ [spec.env]: text });
        if (got instanceof ConfigError) expect(got.message).toContain(spec.env);
        else if (spec.key.endsWith("_bytes") || spec.key.endsWith("_ms")) {
          const v = got[name] as number;
          expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
        }
      }),
      runs,
    );
  });
});
