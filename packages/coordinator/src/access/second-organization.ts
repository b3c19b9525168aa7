/**
 * Calls that act on two organizations at once (moving a device) need the caller's rights in
 * both. The interceptor checks the organization the call is made in; this checks the other one,
 * with a credential of that organization the call carries (a session or an API token), under
 * the same role table.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { OrgRow, Store } from "../store/index.ts";
import { resolvePrincipal } from "./interceptor.ts";
import { rolePermissions, type Permission } from "./policy.ts";
import type { AdminPrincipal } from "./principal.ts";

/**
 * The admin `credential` belongs to, in the organization named `orgRef` (name or id), if its role
 * holds `permission` there. Throws PermissionDenied (InvalidArgument for a missing credential,
 * NotFound for an unknown organization) otherwise.
 */
export async function adminOfOtherOrganization(store: Store, credential: string, orgRef: string, permission: Permission): Promise<{ org: OrgRow; principal: AdminPrincipal }> {
  const org = (await store.access.getOrgByName(orgRef)) ?? (orgRef.startsWith("org_") ? await store.access.getOrg(orgRef) : undefined);
  if (!org) throw new ConnectError(`no organization ${JSON.stringify(orgRef)}`, Code.NotFound);
  if (!credential) throw new ConnectError(`a credential of organization ${org.name} is required`, Code.InvalidArgument);
  const principal = await resolvePrincipal(store, `Bearer ${credential}`, "", null);
  if (principal?.kind !== "admin" || principal.orgId !== org.id) {
    throw new ConnectError(`the credential given for organization ${org.name} is not a valid session or API token of it`, Code.PermissionDenied);
  }
  if (!rolePermissions[principal.role].has(permission)) {
    throw new ConnectError(`role ${principal.role} in organization ${org.name} may not do this (it needs ${permission})`, Code.PermissionDenied);
  }
  return { org, principal };
}
