import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { challengeMessage, verifySignature, type Identity } from "@flotilla/protocol";
import type { Store } from "../store/index.ts";

const VERSION = 1;
const BODY_LENGTH = 1 + 8 + 16;
const LENGTH = BODY_LENGTH + 64;

/**
 * Single-use challenges for the handshake. A challenge is self-contained (issue time, random
 * bytes, the coordinator's signature), so any replica sharing the key can check it; the store's
 * nonce table makes it single-use across replicas.
 */
export class Challenges {
  constructor(
    private readonly identity: Identity,
    private readonly store: Store,
    private readonly ttlMs = 60_000,
  ) {}

  issue(now = Date.now()): Uint8Array {
    const body = Buffer.alloc(BODY_LENGTH);
    body.writeUInt8(VERSION, 0);
    body.writeBigUInt64BE(BigInt(now), 1);
    randomBytes(16).copy(body, 9);
    const sig = this.identity.sign(challengeMessage(body));
    return new Uint8Array(Buffer.concat([body, sig]));
  }

  /** Checks a challenge came from us, is fresh and unused, and marks it used. */
  async consume(challenge: Uint8Array, now = Date.now()): Promise<void> {
    if (challenge.length !== LENGTH || challenge[0] !== VERSION) {
      throw new ConnectError("malformed challenge", Code.InvalidArgument);
    }
    const body = challenge.subarray(0, BODY_LENGTH);
    const sig = challenge.subarray(BODY_LENGTH);
    if (!verifySignature(this.identity.publicKey, challengeMessage(body), sig)) {
      throw new ConnectError("challenge was not issued by this coordinator", Code.Unauthenticated);
    }
    const issuedAt = Number(Buffer.from(body).readBigUInt64BE(1));
    if (issuedAt > now + 5_000 || now - issuedAt > this.ttlMs) {
      throw new ConnectError("challenge expired; start again with Hello", Code.Unauthenticated);
    }
    const nonce = Buffer.from(body.subarray(9)).toString("hex");
    if (!(await this.store.sessions.useNonce(nonce, issuedAt + this.ttlMs, now))) {
      throw new ConnectError("challenge already used (replayed request)", Code.Unauthenticated);
    }
  }
}
