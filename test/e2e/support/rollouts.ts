/** Helpers for the rollout tests: a fleet that can sign releases, releases, a swarm, JSON views. */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Fleet, waitFor, type Sandbox } from "../harness.ts";
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

/** A fleet whose owner holds the organization's signing key. */
export async function signingFleet(sb: Sandbox, extraArgs: string[] = []): Promise<Fleet> {
  const fleet = await new Fleet(sb, extraArgs).start();
  const r = await fleet.admin(["signing-key", "add"]);
  if (r.code !== 0) throw new Error(`signing-key add failed: ${r.stderr}`);
  return fleet;
}

/** Signs and publishes a bundle release `name@version` with `release create`; returns its target path. */
export async function publish(fleet: Fleet, sb: Sandbox, name: string, version: string, extra: string[] = []): Promise<string> {
  const file = join(await sb.dir("flotilla-artifact-"), `${name}.tar.gz`);
  await writeFile(file, randomBytes(2048));
  const r = await fleet.admin(["release", "create", file, "--name", name, "--version", version, "--run", "bin/app", ...extra]);
  if (r.code !== 0) throw new Error(`release create failed (${r.code}): ${r.stderr}`);
  const list = await fleet.adminJson<{ version: string; targetPath: string }[]>(["release", "ls", "--name", name]);
  const rel = list.find((x) => x.version === version);
  if (!rel) throw new Error(`release ${name}@${version} not listed: ${JSON.stringify(list)}`);
  return rel.targetPath;
}

/** A swarm of devices enrolled with an auto-approving token, all online before it returns. */
export async function swarmOf(fleet: Fleet, sb: Sandbox, devices: SwarmDeviceOptions[], stepDelayMs = 50): Promise<Swarm> {
  const swarm = new Swarm(await fleet.joinToken(["--auto-approve", "--uses", "0"]), stepDelayMs);
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
