import { hashSecret, newSecret } from "@flotilla/protocol";
import type { PrincipalKind, Store } from "../store/index.ts";

/** Opens a session and returns its bearer token; only the token's hash is stored. */
export async function openSession(
  store: Store,
  principal: { kind: PrincipalKind; id: string; orgId: string },
  ttlMs: number,
  now = Date.now(),
): Promise<{ token: string; expiresAt: number }> {
  const token = `fls_${newSecret()}`;
  const expiresAt = now + ttlMs;
  await store.sessions.createSession({
    tokenHash: hashSecret(token),
    orgId: principal.orgId,
    principalKind: principal.kind,
    principalId: principal.id,
    createdAt: now,
    expiresAt,
  });
  return { token, expiresAt };
}
