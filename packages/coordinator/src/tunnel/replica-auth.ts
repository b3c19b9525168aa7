import { verifySignature, type Identity } from "@flotilla/protocol";

/** The header that carries a replica-to-replica token. */
export const REPLICA_AUTH_HEADER = "flotilla-replica-auth";
/** How long a token is good for: one tunnel's forward call is made right after it is minted. */
export const REPLICA_TOKEN_TTL_MS = 60_000;
const AUDIENCE = "flotilla-replica/v1";
/** Signed before the token's payload, so no other signature by the coordinator key reads as a token. */
const DOMAIN = Buffer.from("flotilla replica token v1\0");

interface Claims {
  aud: string;
  /** The replica the call is for. */
  to: string;
  /** Expiry, ms since the epoch. */
  exp: number;
}

/**
 * A token for one call from this replica to replica `to`: a short-lived claim signed with the
 * coordinator key all replicas of one database share (they refuse to start otherwise), so only
 * a holder of that key can make it. `payload.signature`, both base64url.
 */
export function replicaToken(identity: Identity, to: string, now = Date.now()): string {
  const claims: Claims = { aud: AUDIENCE, to, exp: now + REPLICA_TOKEN_TTL_MS };
  const payload = Buffer.from(JSON.stringify(claims));
  const signature = identity.sign(Buffer.concat([DOMAIN, payload]));
  return `${payload.toString("base64url")}.${Buffer.from(signature).toString("base64url")}`;
}

/**
 * Whether `token` was signed with `publicKey` (the shared coordinator key), names replica
 * `self` and has not expired (nor claims to live longer than a token may).
 */
export function verifyReplicaToken(publicKey: Uint8Array, self: string, token: string | null | undefined, now = Date.now()): boolean {
  if (!token || token.length > 1024) return false;
  const [p = "", s = "", ...rest] = token.split(".");
  if (!p || !s || rest.length > 0) return false;
  const payload = Buffer.from(p, "base64url");
  const signature = Buffer.from(s, "base64url");
  if (!verifySignature(publicKey, Buffer.concat([DOMAIN, payload]), signature)) return false;
  let claims: Partial<Claims>;
  try {
    claims = JSON.parse(payload.toString("utf8")) as Partial<Claims>;
  } catch {
    return false;
  }
  return (
    claims.aud === AUDIENCE &&
    claims.to === self &&
    typeof claims.exp === "number" &&
    claims.exp > now &&
    claims.exp <= now + REPLICA_TOKEN_TTL_MS + 5_000
  );
}
