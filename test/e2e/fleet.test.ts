import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

async function appliedLabels(stateDir: string): Promise<Record<string, string> | undefined> {
  try {
    return (JSON.parse(await readFile(join(stateDir, "desired.json"), "utf8")) as { labels: Record<string, string> }).labels;
  } catch {
    return undefined;
  }
}

describe("enrollment and device lifecycle", () => {
  it("enrolls with a token as pending, and once approved the device is online with facts and labels", async () => {
    const fleet = await new Fleet(sb).start();
    const join = await fleet.joinToken(["--labels", "site=lab,env=prod", "--uses", "5"]);
    const stateDir = await sb.dir("flotilla-agent-");
    const agent = fleet.startAgent(stateDir, join);

    const pending = await waitFor("a pending device", async () => (await fleet.devices())[0]);
    expect(pending.status).toBe("pending");
    expect(pending.labels).toEqual({ site: "lab", env: "prod" });

    const approve = await fleet.admin(["device", "approve", pending.name]);
    expect(approve.code).toBe(0);

    const online = await waitFor("the device online", async () => {
      const d = await fleet.device(pending.name);
      return d?.status === "online" ? d : undefined;
    });
    expect(online.facts.hostname).toBeTruthy();
    expect(["x86_64", "aarch64"]).toContain(online.facts.arch);
    expect(online.facts.os).toBeTruthy();
    expect(online.agentVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(online.labels).toEqual({ site: "lab", env: "prod" });

    const selected = await fleet.devices("env=prod,arch in (aarch64,x86_64)");
    expect(selected.map((d) => d.id)).toEqual([online.id]);
    expect(await fleet.devices("env!=prod")).toEqual([]);
    expect(agent.exitCode).toBeNull();
  });

  it("refuses a join string whose coordinator key hash is wrong, and the agent exits non-zero", async () => {
    const fleet = await new Fleet(sb).start();
    const join = await fleet.joinToken();
    const body = JSON.parse(Buffer.from(join.slice(join.indexOf(".") + 1), "base64url").toString()) as Record<string, string>;
    body.p = Buffer.alloc(32, 7).toString("base64url").slice(0, 43);
    const forged = `flotilla-join-v1.${Buffer.from(JSON.stringify(body)).toString("base64url")}`;
    const agent = fleet.startAgent(await sb.dir("flotilla-agent-"), forged);
    const code = await agent.exited;
    expect(code).not.toBe(0);
    expect(agent.stderr).toMatch(/does not match the pinned key/);
    expect(await fleet.devices()).toEqual([]);
  });

  it("keeps its identity and name when the agent is stopped and started", async () => {
    const fleet = await new Fleet(sb).start();
    const stateDir = await sb.dir("flotilla-agent-");
    const first = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]));
    const before = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    await first.stop();
    const idBefore = await sb.run(["id", "--state-dir", stateDir]);

    fleet.startAgent(stateDir);
    const after = await waitFor("the device online again", async () => {
      const list = await fleet.devices();
      return list.length === 1 && list[0]!.status === "online" && list[0]!.lastSeen !== before.lastSeen ? list[0] : undefined;
    });
    expect(after.id).toBe(before.id);
    expect(after.name).toBe(before.name);
    expect(after.publicKey).toBe(before.publicKey);
    expect((await sb.run(["id", "--state-dir", stateDir])).stdout).toBe(idBefore.stdout);
    expect(idBefore.stdout.trim()).toBe(before.publicKey);
  });

  it("survives a SIGKILL of the coordinator: devices and labels stay, agents reconnect by themselves", async () => {
    const fleet = await new Fleet(sb).start();
    const join = await fleet.joinToken(["--auto-approve", "--uses", "2", "--labels", "env=prod"]);
    const dirs = [await sb.dir("flotilla-agent-"), await sb.dir("flotilla-agent-")];
    dirs.forEach((d, i) => fleet.startAgent(d, join, [], `agent${i}`));
    const names = await waitFor("two devices online", async () => {
      const list = await fleet.devices();
      return list.length === 2 && list.every((d) => d.status === "online") ? list.map((d) => d.name) : undefined;
    });
    expect((await fleet.admin(["device", "label", "set", names[0]!, "rack=r1"])).code).toBe(0);

    await fleet.coordinator.stop("SIGKILL");
    await fleet.startCoordinator();

    const list = await waitFor("both devices online after the restart", async () => {
      const l = await fleet.devices();
      return l.length === 2 && l.every((d) => d.status === "online") ? l : undefined;
    }, 30_000);
    expect(list.map((d) => d.name).sort()).toEqual([...names].sort());
    expect(list.find((d) => d.name === names[0])!.labels).toEqual({ env: "prod", rack: "r1" });
    expect(list.find((d) => d.name === names[1])!.labels).toEqual({ env: "prod" });
  });

  it("delivers a label changed while the agent was down once it comes back", async () => {
    const fleet = await new Fleet(sb).start();
    const stateDir = await sb.dir("flotilla-agent-");
    const agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]));
    const dev = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    await agent.stop();
    await waitFor("the device offline", async () => (await fleet.device(dev.name))?.status === "offline");

    expect((await fleet.admin(["device", "label", "set", dev.name, "tier=gold"])).code).toBe(0);
    expect(await appliedLabels(stateDir)).toEqual({});

    fleet.startAgent(stateDir);
    await waitFor("the agent to apply the label", async () => (await appliedLabels(stateDir))?.tier === "gold");
    const after = await waitFor("the coordinator to see it applied", async () => {
      const d = await fleet.device(dev.name);
      return d && d.observedGeneration === d.generation ? d : undefined;
    });
    expect(after.labels).toEqual({ tier: "gold" });

    expect((await fleet.admin(["device", "label", "rm", dev.name, "tier"])).code).toBe(0);
    await waitFor("the label removal to reach the agent", async () => {
      const l = await appliedLabels(stateDir);
      return l !== undefined && !("tier" in l);
    });
  });

  it("changes the labels of every device a selector matches in one call, and each agent applies them", async () => {
    const fleet = await new Fleet(sb).start();
    const lab = await fleet.joinToken(["--auto-approve", "--uses", "2", "--labels", "site=lab"]);
    const home = await fleet.joinToken(["--auto-approve", "--labels", "site=home"]);
    const dirs = [await sb.dir("flotilla-agent-"), await sb.dir("flotilla-agent-"), await sb.dir("flotilla-agent-")];
    dirs.forEach((d, i) => fleet.startAgent(d, i < 2 ? lab : home, [], `agent${i}`));
    await waitFor("three devices online", async () => {
      const list = await fleet.devices();
      return list.length === 3 && list.every((d) => d.status === "online");
    });

    // Without a terminal to confirm on, a bulk change needs --yes.
    const unconfirmed = await fleet.admin(["device", "label", "set", "--selector", "site=lab", "ring=canary"]);
    expect(unconfirmed.code).not.toBe(0);
    expect(unconfirmed.stderr.trim().split("\n")).toHaveLength(1);
    expect(unconfirmed.stderr).toMatch(/without confirmation: pass --yes/);
    expect((await fleet.devices("ring=canary")).length).toBe(0);

    const bad = await fleet.admin(["device", "label", "set", "--selector", "site in (", "--yes", "ring=canary"]);
    expect(bad.code).not.toBe(0);
    expect((await fleet.devices("ring=canary")).length).toBe(0);

    const set = await fleet.admin(["device", "label", "set", "--selector", "site=lab", "--yes", "ring=canary"]);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toBe("labels changed on 2 devices\n");
    await waitFor("both lab agents to apply the label", async () => {
      const applied = await Promise.all(dirs.map(appliedLabels));
      return applied[0]?.ring === "canary" && applied[1]?.ring === "canary";
    });
    expect((await appliedLabels(dirs[2]!))?.ring).toBeUndefined();
    expect((await fleet.devices("ring=canary")).map((d) => d.labels.site)).toEqual(["lab", "lab"]);

    const rm = await fleet.admin(["device", "label", "rm", "--selector", "ring=canary", "--yes", "ring"]);
    expect(rm.stdout).toBe("labels changed on 2 devices\n");
    expect((await fleet.devices("ring=canary")).length).toBe(0);
    const audit = await fleet.admin(["audit", "ls", "--json"]);
    expect(audit.stdout).toContain("site=lab");
  });

  it("decommissions a device: the agent forgets its credentials and stops", async () => {
    const fleet = await new Fleet(sb).start();
    const stateDir = await sb.dir("flotilla-agent-");
    const agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]));
    const dev = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    expect((await fleet.admin(["device", "decommission", dev.name])).code).toBe(0);
    expect(await agent.exited).toBe(0);
    await expect(readFile(join(stateDir, "agent.key"))).rejects.toThrow();
    await expect(readFile(join(stateDir, "enrollment.json"))).rejects.toThrow();
    expect((await fleet.device(dev.name))?.status).toBe("decommissioned");

    const again = fleet.startAgent(stateDir);
    expect(await again.exited).not.toBe(0);
    expect(again.stderr).toMatch(/not enrolled/);
  });

  it("rejects a pending device: its agent stops with a clear error", async () => {
    const fleet = await new Fleet(sb).start();
    const stateDir = await sb.dir("flotilla-agent-");
    const agent = fleet.startAgent(stateDir, await fleet.joinToken());
    const dev = await waitFor("a pending device", async () => (await fleet.devices())[0]);
    expect((await fleet.admin(["device", "reject", dev.name])).code).toBe(0);
    expect(await agent.exited).not.toBe(0);
    expect(agent.stderr).toMatch(/rejected/);
  });
});

describe("join tokens", () => {
  it("refuses a used-up token and an expired token, clearly, and enrolls nothing", async () => {
    const fleet = await new Fleet(sb).start();
    const once = await fleet.joinToken(["--uses", "1", "--auto-approve"]);
    fleet.startAgent(await sb.dir("flotilla-agent-"), once);
    await waitFor("the first device", async () => (await fleet.devices()).length === 1);

    const second = fleet.startAgent(await sb.dir("flotilla-agent-"), once);
    expect(await second.exited).not.toBe(0);
    expect(second.stderr).toMatch(/used up/);

    const expiring = await fleet.joinToken(["--expires", "1s", "--uses", "3"]);
    const tokens = await fleet.adminJson<{ expiresAt: string; usesAllowed: number }[]>(["join-token", "ls"]);
    const expiresAt = Date.parse(tokens.find((t) => t.usesAllowed === 3)!.expiresAt);
    await waitFor("the token to expire", () => Date.now() > expiresAt + 50, 5_000);
    const late = fleet.startAgent(await sb.dir("flotilla-agent-"), expiring);
    expect(await late.exited).not.toBe(0);
    expect(late.stderr).toMatch(/expired/);
    expect(await fleet.devices()).toHaveLength(1);
  });

  it("refuses a revoked token", async () => {
    const fleet = await new Fleet(sb).start();
    const join = await fleet.joinToken();
    const [token] = await fleet.adminJson<{ id: string }[]>(["join-token", "ls"]);
    expect((await fleet.admin(["join-token", "revoke", token!.id])).code).toBe(0);
    const agent = fleet.startAgent(await sb.dir("flotilla-agent-"), join);
    expect(await agent.exited).not.toBe(0);
    expect(agent.stderr).toMatch(/revoked/);
  });
});

describe("admin authentication", () => {
  it("refuses an unauthenticated admin call over Connect's JSON protocol", async () => {
    const fleet = await new Fleet(sb).start();
    const res = await fetch(`${fleet.url}/flotilla.admin.v1.AdminService/ListDevices`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { code: string }).code).toBe("unauthenticated");
  });

  it("refuses an admin whose key is not registered, with one clear line and a non-zero exit", async () => {
    const fleet = await new Fleet(sb).start();
    const stranger = await sb.dir("flotilla-admin-");
    const r = await sb.run(["--coordinator", fleet.url, "device", "ls"], { FLOTILLA_HOME: stranger });
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/not registered/);
  });

  it("serves the standard gRPC health service", async () => {
    const fleet = await new Fleet(sb).start();
    const res = await fetch(`${fleet.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ service: "flotilla.agent.v1.AgentService" }),
    });
    expect(await res.json()).toEqual({ status: "SERVING" });
  });
});

