/** Rules access control's handlers share: names, roles, and who may grant what. */
import { Code, ConnectError } from "@connectrpc/connect";
import type { AdminKeyRow, Role, Store } from "../store/index.ts";
import { mayGrant, roleOrder } from "./policy.ts";
import type { AdminPrincipal } from "./principal.ts";

/** A member's or an API token's name. */
export const MEMBER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;

/** A role from a request, `fallback` when empty; throws InvalidArgument for an unknown one. */
export function parseRole(text: string, fallback: Role): Role {
  const role = (text || fallback) as Role;
  if (!roleOrder.includes(role)) {
    throw new ConnectError(`unknown role ${JSON.stringify(text)}: owner, admin, deployer or viewer`, Code.InvalidArgument);
  }
  return role;
}

/** Throws PermissionDenied unless `p` may grant (or take away) `role`: never above one's own. */
export function requireGrant(p: AdminPrincipal, role: Role): void {
  if (!mayGrant(p.role, role)) throw new ConnectError(`a ${p.role} cannot grant or take away the ${role} role`, Code.PermissionDenied);
}

/** The admin key behind a caller, when it called with a key's session (not a token or a password). */
export async function callerKey(store: Store, p: AdminPrincipal): Promise<AdminKeyRow | undefined> {
  return p.keyId ? store.access.getAdminKey(p.orgId, p.keyId) : undefined;
}
