import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Role } from "../store/index.ts";

/** Who is calling, as established by the authorization interceptor. */
export type Principal =
  | { kind: "admin"; orgId: string; keyId: string; role: Role }
  | { kind: "device"; orgId: string; deviceId: string };

export const principalKey = createContextKey<Principal | undefined>(undefined, {
  description: "the authenticated caller",
});

/** The caller's network address, for logs and the audit trail. */
export const remoteAddressKey = createContextKey<string>("", { description: "caller address" });

export function adminOf(ctx: HandlerContext): Extract<Principal, { kind: "admin" }> {
  const p = ctx.values.get(principalKey);
  if (p?.kind !== "admin") throw new ConnectError("an admin session is required", Code.Unauthenticated);
  return p;
}

export function deviceOf(ctx: HandlerContext): Extract<Principal, { kind: "device" }> {
  const p = ctx.values.get(principalKey);
  if (p?.kind !== "device") throw new ConnectError("a device session is required", Code.Unauthenticated);
  return p;
}
