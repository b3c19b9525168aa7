import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { DeviceRow, Lifecycle, Role } from "../store/index.ts";

/** An admin caller: a key, a password login or an API token, with its role in one organization. */
export interface AdminPrincipal {
  kind: "admin";
  orgId: string;
  role: Role;
  /** For the audit log: key:NAME, member:NAME or token:NAME. */
  actor: string;
  keyId?: string;
  memberId?: string;
  tokenId?: string;
}

/** Who is calling, as established by the authorization interceptor. */
export type Principal = AdminPrincipal | DevicePrincipal;

/**
 * An agent. Rejected and decommissioned devices keep a session just long enough to learn their
 * fate, and pending ones to wait for approval: what a device may read depends on `lifecycle`.
 */
export interface DevicePrincipal {
  kind: "device";
  orgId: string;
  deviceId: string;
  lifecycle: Lifecycle;
  /**
   * The device's row as the authorization read it for this call: a handler that needs no fresher
   * view (telemetry ingest, the most frequent call of a fleet) reads it here, not again.
   */
  row: DeviceRow;
}

export const principalKey = createContextKey<Principal | undefined>(undefined, {
  description: "the authenticated caller",
});

/** The caller's network address, for logs and the audit trail. */
export const remoteAddressKey = createContextKey<string>("", { description: "caller address" });

/** The request's Cookie header, for web sessions. */
export const cookieHeaderKey = createContextKey<string>("", { description: "cookie header" });

export function adminOf(ctx: HandlerContext): AdminPrincipal {
  const p = ctx.values.get(principalKey);
  if (p?.kind !== "admin") throw new ConnectError("an admin session is required", Code.Unauthenticated);
  return p;
}

export function deviceOf(ctx: HandlerContext): Extract<Principal, { kind: "device" }> {
  const p = ctx.values.get(principalKey);
  if (p?.kind !== "device") throw new ConnectError("a device session is required", Code.Unauthenticated);
  return p;
}
