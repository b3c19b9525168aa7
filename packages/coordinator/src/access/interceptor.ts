import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { AUTHORIZATION_HEADER, bearerToken, hashSecret } from "@flotilla/protocol";
import { auditDetail, auditTarget, type Auditor } from "../audit/auditor.ts";
import type { Store } from "../store/index.ts";
import { REPLICA_AUTH_HEADER } from "../tunnel/replica-auth.ts";
import { checkCsrf, CSRF_HEADER, readCookie, SESSION_COOKIE } from "./cookies.ts";
import { cookieHeaderKey, principalKey, remoteAddressKey, type DevicePrincipal, type Principal } from "./principal.ts";
import { isAuditedWhenRefused, isChange, rolePermissions, ruleFor } from "./policy.ts";

/** API tokens read `flt_<id>.<secret>`; anything else after "Bearer" is a session token. */
export const API_TOKEN_PREFIX = "flt_";

/**
 * The single authorization point: looks up the method's rule, resolves the caller (session,
 * API token, or web cookie with its CSRF header) and checks on every call that its key, member
 * or token is still valid, so revocation takes effect at once. Every change is audited, allowed
 * or not.
 */
export function authorizationInterceptor(
  store: Store,
  auditor: Auditor,
  /** Whether the value of the `flotilla-replica-auth` header proves a call from another replica. */
  isReplica: (token: string | null) => boolean = () => false,
): Interceptor {
  return (next) => async (req) => {
    const rule = ruleFor(req.service.typeName, req.method.name);
    if (rule === undefined) {
      throw new ConnectError(`no access rule for ${req.service.typeName}/${req.method.name}`, Code.PermissionDenied);
    }
    if (rule === "public") return next(req);
    if (rule === "replica") {
      if (!isReplica(req.header.get(REPLICA_AUTH_HEADER))) {
        throw new ConnectError("only another coordinator replica of this database may call this", Code.Unauthenticated);
      }
      return next(req);
    }
    const principal = await resolvePrincipal(store, req.header.get(AUTHORIZATION_HEADER), req.contextValues.get(cookieHeaderKey), req.header.get(CSRF_HEADER));
    if (rule === "device") {
      req.contextValues.set(principalKey, requireDevice(principal));
      return next(req);
    }
    if (!principal) throw new ConnectError("not logged in, or the session expired", Code.Unauthenticated);
    if (principal.kind !== "admin") throw new ConnectError("only admins may call this", Code.PermissionDenied);

    const record = (outcome: string) =>
      auditor.record({
        orgId: principal.orgId,
        actor: principal.actor,
        action: req.method.name,
        target: auditTarget(req.stream ? undefined : req.message),
        source: req.contextValues.get(remoteAddressKey),
        outcome,
        detail: auditDetail(req.stream ? undefined : req.message),
      });
    const audit = isChange(rule) ? record : undefined;

    if (!rolePermissions[principal.role].has(rule)) {
      if (isAuditedWhenRefused(rule)) await record("denied");
      throw new ConnectError(`role ${principal.role} may not ${req.method.name}`, Code.PermissionDenied);
    }
    req.contextValues.set(principalKey, principal);
    try {
      const res = await next(req);
      await audit?.("ok");
      return res;
    } catch (err) {
      await audit?.(`error:${Code[ConnectError.from(err).code]}`);
      throw err;
    }
  };
}

/** The caller of a call only devices may make: a device session, else the refusal. */
export function requireDevice(principal: Principal | undefined): DevicePrincipal {
  if (!principal) throw new ConnectError("not logged in, or the session expired", Code.Unauthenticated);
  if (principal.kind !== "device") throw new ConnectError("only agents may call this", Code.PermissionDenied);
  return principal;
}

/**
 * Resolves the caller of a plain HTTP request (bearer token or web cookie with its CSRF header),
 * as the interceptor does. Also used by the Nix binary cache for HTTP basic auth.
 */
export async function resolvePrincipal(
  store: Store,
  authorization: string | null,
  cookies: string,
  csrf: string | null,
): Promise<Principal | undefined> {
  const now = Date.now();
  const token = bearerToken(authorization);
  if (token?.startsWith(API_TOKEN_PREFIX)) {
    const [id = "", secret = ""] = token.slice(API_TOKEN_PREFIX.length).split(".");
    const t = id && secret ? await store.access.getApiToken(id) : undefined;
    if (!t || t.secretHash !== hashSecret(secret) || t.revokedAt !== null || t.expiresAt <= now) return undefined;
    return { kind: "admin", orgId: t.orgId, role: t.role, actor: `token:${t.name}`, tokenId: t.id };
  }
  // Without a bearer token, a browser session: only with the CSRF header that script on our own
  // origin can know.
  const cookie = token ? undefined : readCookie(cookies, SESSION_COOKIE);
  const sessionToken = token ?? (cookie && checkCsrf(cookie, csrf) ? cookie : undefined);
  if (!sessionToken) return undefined;
  const session = await store.sessions.getSession(hashSecret(sessionToken), now);
  if (!session) return undefined;
  switch (session.principalKind) {
    case "admin": {
      const key = await store.access.getAdminKey(session.orgId, session.principalId);
      if (!key || key.revokedAt !== null) return undefined;
      return { kind: "admin", orgId: key.orgId, role: key.role, actor: `key:${key.name}`, keyId: key.id, memberId: key.memberId };
    }
    case "member": {
      const member = await store.access.getMember(session.orgId, session.principalId);
      if (!member || member.removedAt !== null) return undefined;
      return { kind: "admin", orgId: member.orgId, role: member.role, actor: `member:${member.name}`, memberId: member.id };
    }
    case "device": {
      // Rejected and decommissioned devices keep a session just long enough to learn their fate.
      const device = await store.devices.getDevice(session.orgId, session.principalId);
      return device && { kind: "device", orgId: device.orgId, deviceId: device.id, lifecycle: device.lifecycle, row: device };
    }
  }
}
