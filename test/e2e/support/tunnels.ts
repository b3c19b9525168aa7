/** Helpers for the tunnel end-to-end tests: a fleet with one tunnel-enabled agent, audit entries. */
import { waitFor, type Proc } from "@flotilla/protocol/testing";
import { Fleet, type DeviceJson } from "./fleet.ts";
import type { Sandbox } from "./sandbox.ts";

/** A coordinator, its owner logged in, and one approved agent allowing `ports`. */
export async function tunnelFleet(sb: Sandbox, ports: string): Promise<{ fleet: Fleet; agent: Proc; device: DeviceJson; stateDir: string }> {
  const fleet = await new Fleet(sb).start();
  const stateDir = await sb.dir("flotilla-agent-");
  const agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]), ["--tunnel-ports", ports]);
  const device = await waitFor(
    "the device online with the tunnel capability",
    async () => {
      const d = (await fleet.devices())[0] as (DeviceJson & { capabilities?: string[] }) | undefined;
      return d?.status === "online" && d.capabilities?.includes("tunnel") ? d : undefined;
    },
    60_000,
  );
  return { fleet, agent, device, stateDir };
}

/** The audit entries of one action, newest last. */
export async function auditEntries(fleet: Fleet, action: string): Promise<{ actor: string; target: string; outcome: string; detail: string }[]> {
  const all = await fleet.adminJson<{ actor: string; action: string; target: string; outcome: string; detail: string }[]>(["audit", "ls"]);
  return all.filter((e) => e.action === action);
}
