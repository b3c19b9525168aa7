import { create } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { generateIdentity, keyPin, verifySignature } from "../identity/identity.ts";
import { propertyRuns, propertyTimeout } from "../property-runs.ts";
import { CoordinatorKeyMismatchError, helloMessage, verifyCoordinatorProof, type CoordinatorProofLike } from "./handshake.ts";
import { endorseKey } from "./rotation.ts";

const RUNS = 200;
const runs = propertyRuns(RUNS);

const coordinator = generateIdentity();
const next = generateIdentity();
const nonce = new Uint8Array(32).fill(7);

const bytes = (max: number) => fc.uint8Array({ maxLength: max });
const key = fc.oneof(bytes(40), fc.constantFrom(coordinator.publicKey, next.publicKey));
/** A protobuf Timestamp with any int64 seconds and int32 nanos. */
const time = fc.option(
  fc.record({ seconds: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), nanos: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }).map((t) => create(TimestampSchema, t)),
  { nil: undefined },
);
const endorsement = fc.oneof(
  fc.record({ oldKey: key, newKey: key, time, signature: bytes(70) }),
  // A real endorsement of the next key, with its time replaced.
  time.map((t) => ({ ...endorseKey(coordinator, next.publicKey, 0), time: t })),
);
/** What a coordinator, or someone in its place, may answer to Hello. */
const proof: fc.Arbitrary<CoordinatorProofLike | undefined> = fc.option(
  fc.record({ coordinatorKey: key, signature: bytes(70), challenge: bytes(100), endorsements: fc.option(fc.array(endorsement, { maxLength: 4 }), { nil: undefined }) }),
  { nil: undefined },
);

describe("Hello proof properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("accepts only the pinned key's signature over our nonce; anything else is a CoordinatorKeyMismatchError", () => {
    fc.assert(
      fc.property(proof, fc.boolean(), (p, followRotations) => {
        let rotatedTo: string | undefined;
        const opts = followRotations ? { onRotated: (pin: string) => (rotatedTo = pin) } : {};
        let got: Uint8Array;
        try {
          got = verifyCoordinatorProof(p, nonce, keyPin(coordinator.publicKey), opts);
        } catch (err) {
          expect(err).toBeInstanceOf(CoordinatorKeyMismatchError);
          return;
        }
        // Accepted: the key signed this nonce and challenge, and is the pinned one or endorsed from it.
        expect(p).toBeDefined();
        expect(verifySignature(p!.coordinatorKey, helloMessage(nonce, got), p!.signature)).toBe(true);
        if (rotatedTo === undefined) expect(keyPin(p!.coordinatorKey)).toBe(keyPin(coordinator.publicKey));
        else expect(rotatedTo).toBe(keyPin(p!.coordinatorKey));
      }),
      // Found by this property: an endorsement time past 2^64 ms threw RangeError out of the check.
      { ...runs, examples: [[{ coordinatorKey: new Uint8Array(0), signature: new Uint8Array(0), challenge: new Uint8Array(0), endorsements: [{ ...endorseKey(coordinator, next.publicKey, 0), time: create(TimestampSchema, { seconds: 18446744073709550n }) }] }, true]] },
    );
  });

  it("accepts the real coordinator's proof, and a rotated key endorsed by the pinned one", () => {
    fc.assert(
      fc.property(bytes(100), (ch) => {
        const real = { coordinatorKey: coordinator.publicKey, signature: coordinator.sign(helloMessage(nonce, ch)), challenge: ch };
        expect(verifyCoordinatorProof(real, nonce, keyPin(coordinator.publicKey))).toEqual(ch);
        const e = endorseKey(coordinator, next.publicKey, 1_700_000_000_000);
        const rotated = {
          coordinatorKey: next.publicKey,
          signature: next.sign(helloMessage(nonce, ch)),
          challenge: ch,
          endorsements: [{ oldKey: e.oldKey, newKey: e.newKey, signature: e.signature, time: create(TimestampSchema, { seconds: 1_700_000_000n }) }],
        };
        let pinned = "";
        expect(verifyCoordinatorProof(rotated, nonce, keyPin(coordinator.publicKey), { onRotated: (p) => (pinned = p) })).toEqual(ch);
        expect(pinned).toBe(keyPin(next.publicKey));
      }),
      runs,
    );
  });
});
