/**
 * The messages each side signs during the handshake. Every message starts with its own
 * context string, so a signature made for one step can never be replayed as another.
 *
 * On every new connection, the caller sends a fresh nonce to Hello; the coordinator answers
 * with its key, a signature over the nonce and a single-use challenge. The caller checks the
 * key against its pin, then signs the challenge with its own key (Enroll, Authenticate, Login).
 */
import { randomBytes } from "node:crypto";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { keyPin, verifySignature } from "../identity/identity.ts";
import { endorsedByPin } from "./rotation.ts";

const encoder = new TextEncoder();

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** 32 random bytes, for Hello's client nonce. */
export function newNonce(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

/** What the coordinator signs in Hello. */
export function helloMessage(clientNonce: Uint8Array, challenge: Uint8Array): Uint8Array {
  return concat(encoder.encode("flotilla/hello/v1\n"), clientNonce, challenge);
}

/** What an enrolling agent signs: the challenge, bound to the join secret it presents. */
export function enrollMessage(challenge: Uint8Array, joinSecret: string): Uint8Array {
  return concat(encoder.encode("flotilla/enroll/v1\n"), challenge, encoder.encode(joinSecret));
}

/** What an enrolled agent signs to open a session. */
export function authenticateMessage(challenge: Uint8Array): Uint8Array {
  return concat(encoder.encode("flotilla/authenticate/v1\n"), challenge);
}

/** What an admin signs to open a session. */
export function loginMessage(challenge: Uint8Array): Uint8Array {
  return concat(encoder.encode("flotilla/login/v1\n"), challenge);
}

/** What the coordinator signs inside a challenge it issues. */
export function challengeMessage(body: Uint8Array): Uint8Array {
  return concat(encoder.encode("flotilla/challenge/v1\n"), body);
}

/** The proof a coordinator gives in Hello, as carried by flotilla.common.v1.CoordinatorProof. */
export interface CoordinatorProofLike {
  coordinatorKey: Uint8Array;
  signature: Uint8Array;
  challenge: Uint8Array;
  /** The chain from earlier keys to this one, after rotations (rotation.ts). */
  endorsements?: { oldKey: Uint8Array; newKey: Uint8Array; time?: Timestamp; signature: Uint8Array }[];
}

/** How a caller treats a coordinator key other than the pinned one. */
export interface ProofCheckOptions {
  /**
   * Accept a key that a chain of endorsements leads to from the pinned key (a rotation); called
   * with the new key's pin once the proof verifies, so the caller can re-pin. Without it, only
   * the pinned key is accepted.
   */
  onRotated?: (newPin: string) => void;
  /** keyPin of the key the TLS certificate carried, when the transport trusted it provisionally. */
  tlsKeyPin?: string;
}

/** Raised when the coordinator does not hold the pinned key. */
export class CoordinatorKeyMismatchError extends Error {
  override name = "CoordinatorKeyMismatchError";
}

/**
 * Checks a coordinator's Hello answer: its key hashes to `pin` and it signed our fresh nonce.
 * Returns the challenge to sign; throws CoordinatorKeyMismatchError otherwise.
 */
export function verifyCoordinatorProof(
  proof: CoordinatorProofLike | undefined,
  clientNonce: Uint8Array,
  pin: string,
  opts: ProofCheckOptions = {},
): Uint8Array {
  if (!proof) throw new CoordinatorKeyMismatchError("the coordinator sent no proof of its key");
  const got = keyPin(proof.coordinatorKey);
  if (opts.tlsKeyPin !== undefined && opts.tlsKeyPin !== got) {
    throw new CoordinatorKeyMismatchError("the coordinator's TLS certificate and its Hello key differ");
  }
  const endorsements = (proof.endorsements ?? []).map((e) => ({ ...e, timeMs: e.time ? timestampMs(e.time) : 0 }));
  const rotated = got !== pin && opts.onRotated !== undefined && endorsedByPin(pin, proof.coordinatorKey, endorsements);
  if (got !== pin && !rotated) {
    throw new CoordinatorKeyMismatchError(
      `the coordinator's key does not match the pinned key (expected ${pin}, got ${got})`,
    );
  }
  if (!verifySignature(proof.coordinatorKey, helloMessage(clientNonce, proof.challenge), proof.signature)) {
    throw new CoordinatorKeyMismatchError("the coordinator's signature over our nonce does not verify");
  }
  if (rotated) opts.onRotated?.(got);
  return proof.challenge;
}
