import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { commonv1, helloMessage, VERSION } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";

/** Hello, shared by the agent and admin services: prove our key over the caller's nonce. */
export function hello(ctx: ServiceContext, clientNonce: Uint8Array): commonv1.CoordinatorProof {
  if (clientNonce.length < 16 || clientNonce.length > 64) {
    throw new ConnectError("client_nonce must have 16 to 64 bytes", Code.InvalidArgument);
  }
  const challenge = ctx.challenges.issue();
  return create(commonv1.CoordinatorProofSchema, {
    coordinatorKey: ctx.identity.publicKey,
    signature: ctx.identity.sign(helloMessage(clientNonce, challenge)),
    challenge,
    version: VERSION,
    endorsements: ctx.endorsements,
  });
}
