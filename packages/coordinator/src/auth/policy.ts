/**
 * The one table of who may call what. Every RPC of every service the coordinator serves has a
 * rule here; the interceptor enforces it and a handler never decides on its own. A method with
 * no rule is refused, and a test walks the schema so a new RPC without a rule fails CI.
 */
import { adminv1, agentv1, healthv1 } from "@flotilla/protocol";
import type { Role } from "../store/index.ts";

/** What a call needs. `public`: nobody needs to be logged in; `device`: an enrolled agent. */
export type Permission =
  | "public"
  | "device"
  | "session"
  | "devices:read"
  | "devices:write"
  | "tokens:read"
  | "tokens:write"
  | "keys:read"
  | "keys:write";

type MethodNames<S extends { method: Record<string, unknown> }> = keyof S["method"];

const admin: Record<MethodNames<typeof adminv1.AdminService>, Permission> = {
  hello: "public",
  login: "public",
  whoAmI: "session",
  addAdminKey: "keys:write",
  listAdminKeys: "keys:read",
  createJoinToken: "tokens:write",
  listJoinTokens: "tokens:read",
  revokeJoinToken: "tokens:write",
  listDevices: "devices:read",
  getDevice: "devices:read",
  approveDevice: "devices:write",
  rejectDevice: "devices:write",
  decommissionDevice: "devices:write",
  updateDeviceLabels: "devices:write",
};

const agent: Record<MethodNames<typeof agentv1.AgentService>, Permission> = {
  hello: "public",
  enroll: "public",
  authenticate: "public",
  watch: "device",
  report: "device",
};

const health: Record<MethodNames<typeof healthv1.Health>, Permission> = {
  check: "public",
  list: "public",
  watch: "public",
};

/** Rules by fully qualified service name, then by the method's local name as in the schema. */
export const policy: Record<string, Record<string, Permission>> = {
  [adminv1.AdminService.typeName]: byLocalName(adminv1.AdminService, admin),
  [agentv1.AgentService.typeName]: byLocalName(agentv1.AgentService, agent),
  [healthv1.Health.typeName]: byLocalName(healthv1.Health, health),
};

function byLocalName(
  service: { methods: readonly { name: string; localName: string }[] },
  rules: Record<string, Permission>,
): Record<string, Permission> {
  return Object.fromEntries(service.methods.map((m) => [m.name, rules[m.localName] ?? ("missing" as Permission)]));
}

const viewer: Permission[] = ["session", "devices:read", "tokens:read", "keys:read"];
const deployer: Permission[] = [...viewer];
const adminRole: Permission[] = [...deployer, "devices:write", "tokens:write"];
const owner: Permission[] = [...adminRole, "keys:write"];

/** The permissions each admin role holds. */
export const rolePermissions: Record<Role, ReadonlySet<Permission>> = {
  viewer: new Set(viewer),
  deployer: new Set(deployer),
  admin: new Set(adminRole),
  owner: new Set(owner),
};

/** The rule for a method, or undefined when the table has none (the call is refused). */
export function ruleFor(serviceTypeName: string, methodName: string): Permission | undefined {
  const rule = policy[serviceTypeName]?.[methodName];
  return rule === ("missing" as Permission) ? undefined : rule;
}
