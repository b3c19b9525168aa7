/**
 * The console's one way to the coordinator: the same Connect services the CLI calls (generated
 * from the same schemas), over fetch on this origin. The session is the HttpOnly cookie that
 * POST /auth/login sets; every call carries the CSRF token that came with it, which the
 * coordinator checks before it takes the cookie (packages/coordinator/src/access/interceptor.ts).
 */
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AdminService, ReleaseService, RolloutService, TelemetryService } from "../../protocol/src/api/adminv1.ts";

export * from "../../protocol/src/api/adminv1.ts";

/** What the console knows about the logged-in member. */
export interface Session {
  organization: string;
  name: string;
  role: Role;
  csrf: string;
  expiresAt: string;
}

export type Role = "viewer" | "deployer" | "admin" | "owner";

const STORAGE_KEY = "flotilla.session";
// The CSRF token (not the session secret, which script never sees) survives a reload in this tab.
let current: Session | undefined = readStored();
let expiredReason = "";
const listeners = new Set<() => void>();

function readStored(): Session | undefined {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null") as Session | null;
    return s && Date.parse(s.expiresAt) > Date.now() ? s : undefined;
  } catch {
    return undefined;
  }
}

export function session(): Session | undefined {
  return current;
}

/** Why the last session ended without a logout ("" after a logout or a login). */
export function sessionEndReason(): string {
  return expiredReason;
}

export function onSessionChange(f: () => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

function setSession(s: Session | undefined, reason = ""): void {
  current = s;
  expiredReason = reason;
  if (s) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(STORAGE_KEY);
  for (const f of listeners) f();
}

/** Ends the session in this tab because the coordinator no longer accepts it. */
export function expireSession(reason = "Your session expired. Log in again."): void {
  if (current) setSession(undefined, reason);
}

/** POST /auth/login; throws an Error with the coordinator's one-line reason. */
export async function login(organization: string, name: string, password: string): Promise<void> {
  const res = await fetch("/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ organization, name, password }),
  });
  const body = (await res.json().catch(() => ({}))) as { error?: string; csrfToken?: string; organization?: string; role?: Role; expiresAt?: string };
  if (!res.ok || !body.csrfToken) throw new Error(body.error ?? `login failed (HTTP ${res.status})`);
  setSession({ organization: body.organization ?? organization, name, role: body.role ?? "viewer", csrf: body.csrfToken, expiresAt: body.expiresAt ?? new Date(Date.now() + 3600_000).toISOString() });
}

/** Redeems a one-time link from `flotilla login-link` (POST /auth/login-link/redeem). */
export async function redeemLoginLink(token: string): Promise<void> {
  const res = await fetch("/auth/login-link/redeem", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }) });
  const body = (await res.json().catch(() => ({}))) as { error?: string; csrfToken?: string; organization?: string; name?: string; role?: Role; expiresAt?: string };
  if (!res.ok || !body.csrfToken) throw new Error(body.error ?? `login failed (HTTP ${res.status})`);
  setSession({ organization: body.organization ?? "", name: body.name ?? "", role: body.role ?? "viewer", csrf: body.csrfToken, expiresAt: body.expiresAt ?? new Date(Date.now() + 3600_000).toISOString() });
}

/**
 * Moves this tab's session to another organization the admin's key belongs to (POST
 * /auth/switch-organization): a new session cookie there, with the key's role there.
 */
export async function switchOrganization(organization: string): Promise<void> {
  const s = current;
  const res = await fetch("/auth/switch-organization", {
    method: "POST",
    headers: { "content-type": "application/json", "x-flotilla-csrf": s?.csrf ?? "" },
    body: JSON.stringify({ organization }),
  });
  const body = (await res.json().catch(() => ({}))) as { error?: string; csrfToken?: string; organization?: string; name?: string; role?: Role; expiresAt?: string };
  if (!res.ok || !body.csrfToken) throw new Error(body.error ?? `switching failed (HTTP ${res.status})`);
  setSession({ organization: body.organization ?? organization, name: body.name ?? s?.name ?? "", role: body.role ?? "viewer", csrf: body.csrfToken, expiresAt: body.expiresAt ?? new Date(Date.now() + 3600_000).toISOString() });
}

export async function logout(): Promise<void> {
  const s = current;
  setSession(undefined);
  if (s) await fetch("/auth/logout", { method: "POST", headers: { "x-flotilla-csrf": s.csrf } }).catch(() => undefined);
}

const csrf: Interceptor = (next) => async (req) => {
  if (current) req.header.set("x-flotilla-csrf", current.csrf);
  try {
    return await next(req);
  } catch (err) {
    if (ConnectError.from(err).code === Code.Unauthenticated) expireSession();
    throw err;
  }
};

const transport = createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [csrf] });

export const admin = createClient(AdminService, transport);
export const releases = createClient(ReleaseService, transport);
export const rollouts = createClient(RolloutService, transport);
export const telemetry = createClient(TelemetryService, transport);

/**
 * What each role may do, as the coordinator's policy (packages/coordinator/src/access/policy.ts)
 * grants it: the console hides what would be refused. The coordinator decides in the end.
 */
const viewer = ["devices:read", "tokens:read", "logs:read", "releases:read", "rollouts:read", "nix:read"];
const deployer = [...viewer, "releases:write", "rollouts:write", "nix:write"];
const adminRole = [...deployer, "devices:write", "tokens:write", "members:read", "members:write", "keys:read", "keys:write", "api-tokens:read", "api-tokens:write", "audit:read", "tunnel:open"];
const permissions: Record<Role, ReadonlySet<string>> = {
  viewer: new Set(viewer),
  deployer: new Set(deployer),
  admin: new Set(adminRole),
  owner: new Set([...adminRole, "orgs:create"]),
};
export type Permission =
  | "devices:read" | "devices:write" | "tokens:read" | "tokens:write" | "logs:read" | "releases:read" | "releases:write"
  | "rollouts:read" | "rollouts:write" | "members:read" | "members:write" | "keys:read" | "keys:write"
  | "api-tokens:read" | "api-tokens:write" | "audit:read" | "tunnel:open" | "orgs:create";

export function can(p: Permission): boolean {
  return current !== undefined && (permissions[current.role]?.has(p) ?? false);
}

/** A refused or failed call as one line for the page. */
export function reason(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.PermissionDenied) return `Refused: ${e.rawMessage}`;
  if (e.code === Code.Unavailable) return `The coordinator is unreachable (${e.rawMessage}).`;
  return e.rawMessage || String(err);
}

export { Code, ConnectError };
export { Lifecycle } from "../../protocol/src/gen/flotilla/common/v1/common_pb.ts";
