import { ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { generateIdentity } from "@flotilla/protocol";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import type { Store } from "../store/index.ts";
import { Challenges } from "./challenges.ts";

const RUNS = 200;
const runs = propertyRuns(RUNS);
const NOW = 1_800_000_000_000;

/** The nonce table of a store, in memory: each nonce is used once. */
function nonceStore(): Store {
  const used = new Set<string>();
  return { sessions: { useNonce: (nonce: string) => Promise.resolve(!used.has(nonce) && !!used.add(nonce)) } } as unknown as Store;
}

describe("handshake challenge properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("refuses arbitrary bytes and any altered challenge with a ConnectError, and a real one after its first use", async () => {
    const challenges = new Challenges(generateIdentity(), nonceStore());
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 120 }).map((b) => ({ kind: "bytes" as const, b, at: 0, xor: 0 })),
          fc.record({ kind: fc.constant("altered" as const), b: fc.constant(new Uint8Array(0)), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
          fc.constant({ kind: "real" as const, b: new Uint8Array(0), at: 0, xor: 0 }),
        ),
        fc.integer({ min: -120_000, max: 120_000 }),
        async (c, skew) => {
          let bytes: Uint8Array = c.b;
          if (c.kind !== "bytes") {
            bytes = challenges.issue(NOW);
            if (c.kind === "altered") bytes[c.at % bytes.length]! ^= c.xor;
          }
          // Issued at NOW, checked at NOW - skew: up to 5 s early (clock skew) and 60 s late.
          const fresh = skew >= -60_000 && skew <= 5_000;
          const first = await challenges.consume(bytes, NOW - skew).then(() => "ok", (err: unknown) => err);
          if (first !== "ok") expect(first).toBeInstanceOf(ConnectError);
          expect(first === "ok").toBe(c.kind === "real" && fresh);
          const again = await challenges.consume(bytes, NOW - skew).then(() => "ok", (err: unknown) => err);
          expect(again).toBeInstanceOf(ConnectError);
        },
      ),
      runs,
    );
  });
});
