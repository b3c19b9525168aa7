/**
 * The one table of who may call what. Every RPC of every service the coordinator serves has a
 * rule here; the interceptor enforces it and a handler never decides on its own. A method with
 * no rule is refused, and a test walks the schema so a new RPC without a rule fails CI.
 */
import { adminv1, agentv1, healthv1, internalv1 } from "@flotilla/protocol";
import type { Role } from "../store/index.ts";

/**
 * What a call needs. `public`: nobody needs to be logged in; `device`: an enrolled agent;
 * `replica`: another coordinator replica of the same database, proven by a short-lived token
 * signed with the shared coordinator key (tunnel/replica-auth.ts); `session`: any admin of the
 * organization. A permission ending in `:write` or `:create` marks
 * a change: every such call is written to the audit log.
 */
export type Permission =
  | "public"
  | "device"
  | "replica"
  | "session"
  | "devices:read"
  | "devices:write"
  | "tokens:read"
  | "tokens:write"
  | "members:read"
  | "members:write"
  | "keys:read"
  | "keys:write"
  | "api-tokens:read"
  | "api-tokens:write"
  | "audit:read"
  | "orgs:create"
  | "nix:read"
  | "nix:write"
  | "logs:read"
  | "tunnel:open"
  | "releases:read"
  | "releases:write"
  | "signing-keys:write"
  | "rollouts:read"
  | "rollouts:write"
  | "storage:write";

type MethodNames<S extends { method: Record<string, unknown> }> = keyof S["method"];

const admin: Record<MethodNames<typeof adminv1.AdminService>, Permission> = {
  hello: "public",
  login: "public",
  whoAmI: "session",
  addAdminKey: "keys:write",
  listAdminKeys: "keys:read",
  revokeAdminKey: "keys:write",
  createJoinToken: "tokens:write",
  listJoinTokens: "tokens:read",
  revokeJoinToken: "tokens:write",
  listDevices: "devices:read",
  watchDevices: "devices:read",
  summarizeDevices: "devices:read",
  getDevice: "devices:read",
  approveDevice: "devices:write",
  rejectDevice: "devices:write",
  decommissionDevice: "devices:write",
  updateDeviceLabels: "devices:write",
  moveDevice: "devices:write",
  createOrganization: "orgs:create",
  listOrganizations: "session",
  addMember: "members:write",
  listMembers: "members:read",
  removeMember: "members:write",
  createApiToken: "api-tokens:write",
  listApiTokens: "api-tokens:read",
  revokeApiToken: "api-tokens:write",
  listAuditEntries: "audit:read",
  verifyAuditLog: "audit:read",
};

const agent: Record<MethodNames<typeof agentv1.AgentService>, Permission> = {
  hello: "public",
  enroll: "public",
  authenticate: "public",
  watch: "device",
  report: "device",
};

const nix: Record<MethodNames<typeof adminv1.NixService>, Permission> = {
  createNixKey: "nix:write",
  importNixKey: "nix:write",
  listNixKeys: "nix:read",
  deleteNixKey: "nix:write",
};

const agentTelemetry: Record<MethodNames<typeof agentv1.TelemetryService>, Permission> = {
  shipLogs: "device",
  shipMetrics: "device",
};

const adminTelemetry: Record<MethodNames<typeof adminv1.TelemetryService>, Permission> = {
  queryLogs: "logs:read",
  followLogs: "logs:read",
  getMetrics: "logs:read",
  getRetention: "logs:read",
  setRetention: "storage:write",
};

const tunnel: Record<MethodNames<typeof adminv1.TunnelService>, Permission> = {
  open: "tunnel:open",
};

const agentTunnel: Record<MethodNames<typeof agentv1.AgentTunnelService>, Permission> = {
  listen: "device",
  attach: "device",
};

const releases: Record<MethodNames<typeof adminv1.ReleaseService>, Permission> = {
  getRepository: "releases:read",
  updateRoot: "signing-keys:write",
  publishTargets: "releases:write",
  listReleases: "releases:read",
  deployRelease: "releases:write",
  getDeviceReleases: "releases:read",
  removeRelease: "releases:write",
  collectGarbage: "storage:write",
  controlRelease: "releases:write",
};

const rollouts: Record<MethodNames<typeof adminv1.RolloutService>, Permission> = {
  planRollout: "rollouts:read",
  startRollout: "rollouts:write",
  listRollouts: "rollouts:read",
  getRollout: "rollouts:read",
  pauseRollout: "rollouts:write",
  resumeRollout: "rollouts:write",
  approveWave: "rollouts:write",
  abortRollout: "rollouts:write",
  watchRollout: "rollouts:read",
};

const health: Record<MethodNames<typeof healthv1.Health>, Permission> = {
  check: "public",
  list: "public",
  watch: "public",
};

const replicaTunnel: Record<MethodNames<typeof internalv1.ReplicaTunnelService>, Permission> = {
  forward: "replica",
};

/** Rules by fully qualified service name, then by the method's name as in the schema. */
export const policy: Record<string, Record<string, Permission>> = {
  [adminv1.AdminService.typeName]: byName(adminv1.AdminService, admin),
  [agentv1.AgentService.typeName]: byName(agentv1.AgentService, agent),
  [healthv1.Health.typeName]: byName(healthv1.Health, health),
  [adminv1.NixService.typeName]: byName(adminv1.NixService, nix),
  [agentv1.TelemetryService.typeName]: byName(agentv1.TelemetryService, agentTelemetry),
  [adminv1.TelemetryService.typeName]: byName(adminv1.TelemetryService, adminTelemetry),
  [adminv1.TunnelService.typeName]: byName(adminv1.TunnelService, tunnel),
  [agentv1.AgentTunnelService.typeName]: byName(agentv1.AgentTunnelService, agentTunnel),
  [adminv1.ReleaseService.typeName]: byName(adminv1.ReleaseService, releases),
  [adminv1.RolloutService.typeName]: byName(adminv1.RolloutService, rollouts),
  [internalv1.ReplicaTunnelService.typeName]: byName(internalv1.ReplicaTunnelService, replicaTunnel),
};

function byName(
  service: { methods: readonly { name: string; localName: string }[] },
  rules: Record<string, Permission>,
): Record<string, Permission> {
  const out: Record<string, Permission> = {};
  for (const m of service.methods) {
    const rule = rules[m.localName];
    if (rule) out[m.name] = rule;
  }
  return out;
}

const viewer: Permission[] = ["session", "devices:read", "tokens:read", "nix:read", "logs:read", "releases:read", "rollouts:read"];
// Deployers ship software; they change no membership.
const deployer: Permission[] = [...viewer, "nix:write", "releases:write", "rollouts:write"];
const adminRole: Permission[] = [
  ...deployer,
  "devices:write",
  "tokens:write",
  "members:read",
  "members:write",
  "keys:read",
  "keys:write",
  "api-tokens:read",
  "api-tokens:write",
  "audit:read",
  "tunnel:open",
  "signing-keys:write",
  "storage:write",
];
const owner: Permission[] = [...adminRole, "orgs:create"];

/** The permissions each role holds. */
export const rolePermissions: Record<Role, ReadonlySet<Permission>> = {
  viewer: new Set(viewer),
  deployer: new Set(deployer),
  admin: new Set(adminRole),
  owner: new Set(owner),
};

/** Roles from least to most powerful: a caller may grant only roles up to its own. */
export const roleOrder: readonly Role[] = ["viewer", "deployer", "admin", "owner"];

/** Whether `actor` may hand out `granted` (to a member or an API token). */
export function mayGrant(actor: Role, granted: Role): boolean {
  return roleOrder.indexOf(granted) <= roleOrder.indexOf(actor);
}

/** The rule for a method, or undefined when the table has none (the call is refused). */
export function ruleFor(serviceTypeName: string, methodName: string): Permission | undefined {
  return policy[serviceTypeName]?.[methodName];
}

/**
 * Whether a refused call under this rule goes to the audit log even though it changes nothing:
 * reaching into a device (a tunnel) is audited whether allowed or not.
 */
export function isAuditedWhenRefused(rule: Permission): boolean {
  return isChange(rule) || rule === "tunnel:open";
}

/** Whether a call under this rule changes something, and so goes to the audit log. */
export function isChange(rule: Permission): boolean {
  return rule.endsWith(":write") || rule.endsWith(":create");
}
