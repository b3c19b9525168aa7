import type { DescService } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { adminv1, agentv1, healthv1, internalv1 } from "@flotilla/protocol";
import { isAuditedWhenRefused, policy, rolePermissions, ruleFor } from "./policy.ts";

const isService = (v: unknown): v is DescService => (v as { kind?: unknown } | undefined)?.kind === "service";
/** Every service of the schema packages the coordinator serves: a new one is covered at once. */
const services = ([...Object.values(adminv1), ...Object.values(agentv1), ...Object.values(internalv1), healthv1.Health] as unknown[]).filter(isService);

describe("the access table", () => {
  it("has a rule for every RPC of every service the coordinator serves", () => {
    for (const service of services) {
      for (const method of service.methods) {
        expect(ruleFor(service.typeName, method.name), `${service.typeName}/${method.name}`).toBeDefined();
      }
    }
  });

  it("has no rule for a method the schema does not have", () => {
    expect(ruleFor(adminv1.AdminService.typeName, "DropEverything")).toBeUndefined();
    expect(ruleFor("flotilla.evil.v1.Service", "Hello")).toBeUndefined();
    expect(Object.keys(policy).sort()).toEqual(services.map((s) => s.typeName).sort());
  });

  it("leaves only the handshake and health public", () => {
    const open = services.flatMap((s) =>
      s.methods.filter((m) => ruleFor(s.typeName, m.name) === "public").map((m) => `${s.typeName}/${m.name}`),
    );
    expect(open.sort()).toEqual(
      [
        "flotilla.admin.v1.AdminService/Hello",
        "flotilla.admin.v1.AdminService/Login",
        "flotilla.agent.v1.AgentService/Authenticate",
        "flotilla.agent.v1.AgentService/Enroll",
        "flotilla.agent.v1.AgentService/Hello",
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/List",
        "grpc.health.v1.Health/Watch",
      ].sort(),
    );
  });

  it("gives viewers read permissions only", () => {
    for (const p of rolePermissions.viewer) expect(p === "session" || p.endsWith(":read")).toBe(true);
  });

  it("lets deployers change no membership, keys or tokens, and only owners create organizations", () => {
    for (const p of ["members:write", "keys:write", "api-tokens:write"] as const) {
      expect(rolePermissions.deployer.has(p)).toBe(false);
      expect(rolePermissions.admin.has(p)).toBe(true);
    }
    expect(rolePermissions.admin.has("orgs:create")).toBe(false);
    expect(rolePermissions.owner.has("orgs:create")).toBe(true);
  });

  it("lets only admins and owners open tunnels, and audits a refused one", () => {
    expect(ruleFor(adminv1.TunnelService.typeName, "Open")).toBe("tunnel:open");
    expect(rolePermissions.viewer.has("tunnel:open")).toBe(false);
    expect(rolePermissions.deployer.has("tunnel:open")).toBe(false);
    expect(rolePermissions.admin.has("tunnel:open")).toBe(true);
    expect(rolePermissions.owner.has("tunnel:open")).toBe(true);
    expect(isAuditedWhenRefused("tunnel:open")).toBe(true);
    expect(isAuditedWhenRefused("devices:read")).toBe(false);
  });
});
