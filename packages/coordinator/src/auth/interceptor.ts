import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { AUTHORIZATION_HEADER, bearerToken, hashSecret } from "@flotilla/protocol";
import type { Store } from "../store/index.ts";
import { principalKey, type Principal } from "./principal.ts";
import { rolePermissions, ruleFor } from "./policy.ts";

/**
 * The single authorization point: looks up the method's rule, resolves the bearer session and
 * checks the principal is still valid (key not revoked, device still enrolled) on every call,
 * so revocation takes effect at once.
 */
export function authorizationInterceptor(store: Store): Interceptor {
  return (next) => async (req) => {
    const rule = ruleFor(req.service.typeName, req.method.name);
    if (rule === undefined) {
      throw new ConnectError(`no access rule for ${req.service.typeName}/${req.method.name}`, Code.PermissionDenied);
    }
    if (rule === "public") return next(req);
    const principal = await resolve(store, req.header.get(AUTHORIZATION_HEADER));
    if (!principal) throw new ConnectError("not logged in, or the session expired", Code.Unauthenticated);
    if (rule === "device") {
      if (principal.kind !== "device") throw new ConnectError("only agents may call this", Code.PermissionDenied);
    } else {
      if (principal.kind !== "admin") throw new ConnectError("only admins may call this", Code.PermissionDenied);
      if (!rolePermissions[principal.role].has(rule)) {
        throw new ConnectError(`role ${principal.role} may not ${req.method.name}`, Code.PermissionDenied);
      }
    }
    req.contextValues.set(principalKey, principal);
    return next(req);
  };
}

async function resolve(store: Store, header: string | null): Promise<Principal | undefined> {
  const token = bearerToken(header);
  if (!token) return undefined;
  const session = await store.getSession(hashSecret(token), Date.now());
  if (!session) return undefined;
  if (session.principalKind === "admin") {
    const key = await store.getAdminKey(session.orgId, session.principalId);
    if (!key || key.revokedAt !== null) return undefined;
    return { kind: "admin", orgId: key.orgId, keyId: key.id, role: key.role };
  }
  const device = await store.getDevice(session.orgId, session.principalId);
  // Rejected and decommissioned devices keep a session just long enough to learn their fate.
  if (!device) return undefined;
  return { kind: "device", orgId: device.orgId, deviceId: device.id };
}
