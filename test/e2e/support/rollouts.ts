/** Helpers for the rollout tests: releases, a swarm, real agents, JSON views (signedFleet in releases.ts signs). */
import { execFileSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor, type Proc } from "@flotilla/protocol/testing";
import type { Fleet } from "./fleet.ts";
import { killProcessesUnder, type Sandbox } from "./sandbox.ts";
import { Swarm, type SwarmDeviceOptions } from "./swarm.ts";

export interface RolloutDeviceJson {
  id: string;
  name: string;
  wave: number;
  state: string;
  bytesDone: number;
  bytesTotal: number;
  error: string;
  previousVersion: string;
}

export interface RolloutJson {
  id: string;
  status: "running" | "paused" | "completed" | "aborted" | "failed";
  reason: string;
  createdAt: string;
  release: { name: string; version: string; counter: number };
  currentWave: number;
  waves: { number: number; entry: string; total: number; healthy: number; failed: number; skipped: number; inProgress: number; pending: number }[];
  devices: RolloutDeviceJson[];
}

export interface PlanJson {
  release: { name: string; version: string; counter: number };
  waves: { number: number; entry: string; devices: { id: string; name: string; online: boolean }[] }[];
  ineligible: { id: string; name: string; reason: string }[];
  offline: { id: string; name: string }[];
}

/**
 * Signs and publishes a real bundle release `name@version` with `release create`: a tarball whose
 * `bin/app` sleeps (bounded, so nothing outlives a test for long), healthy after staying up one
 * second. Returns its target path.
 */
export async function publish(fleet: Fleet, sb: Sandbox, name: string, version: string, extra: string[] = []): Promise<string> {
  const dir = await sb.dir("flotilla-artifact-");
  await mkdir(join(dir, "src", "bin"), { recursive: true });
  await writeFile(join(dir, "src", "bin", "app"), `#!/bin/sh\n# ${name} ${version}\nexec sleep 120\n`, { mode: 0o755 });
  const file = join(dir, `${name}.tar.gz`);
  execFileSync("tar", ["-czf", file, "-C", join(dir, "src"), "."]);
  const r = await fleet.admin(["release", "create", file, "--name", name, "--version", version, "--run", "exec sh bin/app", "--health-up-seconds", "1", ...extra]);
  if (r.code !== 0) throw new Error(`release create failed (${r.code}): ${r.stderr}`);
  const list = await fleet.adminJson<{ version: string; targetPath: string }[]>(["release", "ls", "--name", name]);
  const rel = list.find((x) => x.version === version);
  if (!rel) throw new Error(`release ${name}@${version} not listed: ${JSON.stringify(list)}`);
  return rel.targetPath;
}

/** A swarm of devices enrolled with an auto-approving token (label env=prod), all online before it returns. */
export async function swarmOf(fleet: Fleet, sb: Sandbox, devices: SwarmDeviceOptions[], stepDelayMs = 50): Promise<Swarm> {
  const swarm = new Swarm(await fleet.joinToken(["--auto-approve", "--uses", "0", "--labels", "env=prod"]), stepDelayMs);
  sb.onCleanup(() => swarm.close());
  await swarm.add(devices);
  await waitFor(
    `${devices.length} swarm devices online`,
    async () => (await fleet.devices()).filter((d) => d.status === "online").length >= devices.length,
    60_000,
    250,
  );
  return swarm;
}

/** Starts `n` real `flotilla agent` processes (label env=prod) with the bundle activator; waits until they are online, declaring release:bundle. */
export async function realAgents(fleet: Fleet, sb: Sandbox, n: number): Promise<{ agents: Proc[]; names: string[] }> {
  const join = await fleet.joinToken(["--auto-approve", "--uses", String(n), "--labels", "env=prod"]);
  const agents: Proc[] = [];
  for (let i = 0; i < n; i++) {
    const stateDir = await sb.dir("flotilla-agent-");
    // The services an agent starts outlive it by design; the test's must not outlive the test.
    sb.onCleanup(() => killProcessesUnder(stateDir));
    agents.push(fleet.startAgent(stateDir, join, [], `agent-${i}`));
  }
  const names = await waitFor(
    `${n} real agents online with release:bundle`,
    async () => {
      const list = await fleet.adminJson<{ name: string; status: string; agentVersion: string; capabilities: string[]; facts: Record<string, string> }[]>(["device", "ls"]);
      const real = list.filter((d) => !d.name.startsWith("sw-") && d.status === "online" && d.capabilities.includes("release:bundle"));
      return real.length === n ? real.map((d) => d.name) : undefined;
    },
    60_000,
    250,
  );
  return { agents, names };
}

/** The time a device reported its `activating` step for `targetPath` (the coordinator's record). */
export async function activatedAt(fleet: Fleet, device: string, targetPath: string): Promise<number> {
  const show = await fleet.adminJson<{ steps: { time: string; targetPath: string; step: string }[] }>(["device", "show", device]);
  const s = show.steps.find((x) => x.targetPath === targetPath && x.step === "activating");
  if (!s) throw new Error(`${device} reported no activating step for ${targetPath}`);
  return Date.parse(s.time);
}

/** Host names sw-00, sw-01, ... (device names sort in this order). */
export function hosts(n: number, from = 0, over: Partial<SwarmDeviceOptions> = {}): SwarmDeviceOptions[] {
  return Array.from({ length: n }, (_, i) => ({ hostname: `sw-${String(from + i).padStart(2, "0")}`, ...over }));
}

export function show(fleet: Fleet, id: string): Promise<RolloutJson> {
  return fleet.adminJson<RolloutJson>(["rollout", "show", id]);
}

/** Waits until the rollout's status is `status`; returns it then. */
export function waitForStatus(fleet: Fleet, id: string, status: RolloutJson["status"], timeoutMs = 90_000): Promise<RolloutJson> {
  return waitFor(`rollout ${id} to be ${status}`, async () => {
    const r = await show(fleet, id);
    return r.status === status ? r : undefined;
  }, timeoutMs, 300);
}

/** `rollout start ... --json`; throws when it fails. */
export async function start(fleet: Fleet, args: string[]): Promise<RolloutJson & { plan: PlanJson }> {
  const r = await fleet.admin(["rollout", "start", ...args, "--json"]);
  if (r.code !== 0) throw new Error(`rollout start failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as RolloutJson & { plan: PlanJson };
}
