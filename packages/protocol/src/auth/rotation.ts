/**
 * Rotating the coordinator's key without re-enrolling devices (SSH's UpdateHostKeys and TUF's
 * root rotation work alike): the old key signs an endorsement of the new one; the coordinator
 * presents the chain of endorsements in every Hello, and a caller that pinned any earlier key
 * follows the chain to the current key and re-pins it. A key that no pinned key endorsed is
 * refused as before.
 */
import { keyPin, verifySignature, type Identity } from "../identity/identity.ts";

/** One link of the chain, as carried by flotilla.common.v1.KeyEndorsement. */
export interface KeyEndorsementLike {
  oldKey: Uint8Array;
  newKey: Uint8Array;
  /** Milliseconds since the epoch. */
  timeMs: number;
  signature: Uint8Array;
}

/** The longest chain a caller follows: enough for years of rotations, bounded against abuse. */
export const MAX_ENDORSEMENT_CHAIN = 32;

const U64_MAX = 2n ** 64n - 1n;

/**
 * What an old key signs to endorse its successor. A time outside what 8 bytes hold (a hostile
 * Timestamp of 2^63 seconds) is clamped, so such a link merely fails to verify.
 */
export function endorsementMessage(oldKey: Uint8Array, newKey: Uint8Array, timeMs: number): Uint8Array {
  const time = Buffer.alloc(8);
  const ms = Number.isFinite(timeMs) ? BigInt(Math.max(0, Math.floor(timeMs))) : timeMs > 0 ? U64_MAX : 0n;
  time.writeBigUInt64BE(ms > U64_MAX ? U64_MAX : ms);
  return new Uint8Array(Buffer.concat([Buffer.from("flotilla/key-rotation/v1\n"), oldKey, newKey, time]));
}

/** The old identity endorses `newKey`. */
export function endorseKey(old: Identity, newKey: Uint8Array, timeMs = Date.now()): KeyEndorsementLike {
  return { oldKey: old.publicKey, newKey, timeMs, signature: old.sign(endorsementMessage(old.publicKey, newKey, timeMs)) };
}

/**
 * Whether a chain of valid endorsements leads from the key with `pin` to `current`. Links
 * whose signature does not verify are ignored, so a forged link cannot help.
 */
export function endorsedByPin(pin: string, current: Uint8Array, endorsements: readonly KeyEndorsementLike[]): boolean {
  const valid = endorsements
    .slice(0, MAX_ENDORSEMENT_CHAIN)
    .filter((e) => verifySignature(e.oldKey, endorsementMessage(e.oldKey, e.newKey, e.timeMs), e.signature));
  const target = keyPin(current);
  let at = pin;
  for (let hops = 0; hops < valid.length; hops++) {
    if (at === target) return true;
    const next = valid.find((e) => keyPin(e.oldKey) === at);
    if (!next) return false;
    at = keyPin(next.newKey);
  }
  return at === target;
}
