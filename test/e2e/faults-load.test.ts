/**
 * A saturated coordinator sheds load instead of falling over: agents' calls beyond what it
 * serves are told to retry later (with advice they honour), admin calls are still answered,
 * nothing is lost or done twice, and no agent is pushed into a reconnect storm. Saturation is
 * made the way it shows in the field: the coordinator stalls for 2.5 s (SIGSTOP) in the middle
 * of a rollout over 32 devices, so its event loop lags far past `--shed-lag-ms` and the calls
 * that piled up meanwhile all arrive at once.
 */
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { useProxiedFleet } from "./support/faults.ts";
import { hosts, publish, realAgents, show, start, swarmOf } from "./support/rollouts.ts";

describe("a saturated coordinator", () => {
  const f = useProxiedFleet();

  it("sheds agents' calls with retry advice, answers admins, and completes a rollout with every device activated once", async () => {
    const { fleet, proxy, sandbox } = f;
    const target = await publish(fleet, sandbox, "webapp", "1.0.0");
    // Each device takes about 2 s through its steps, so the stall falls in the middle of the rollout.
    const swarm = await swarmOf(fleet, sandbox, hosts(30), 300);
    const real = await realAgents(fleet, sandbox, 2);
    const acceptedBefore = proxy.accepted;

    const r = await start(fleet, ["webapp@1.0.0", "--selector", "env=prod", "--waves", "100%", "--max-parallel", "32"]);
    await waitFor("devices installing", async () => (await show(fleet, r.id)).devices.some((d) => d.state !== "pending"), 30_000, 100);
    fleet.coordinator.child.kill("SIGSTOP");
    const stoppedAt = Date.now();
    await waitFor("a 2.5 s stall", () => Date.now() - stoppedAt >= 2500, 5000, 50);
    fleet.coordinator.child.kill("SIGCONT");
    // Admin calls are answered all along.
    let adminCalls = 0;
    for (;;) {
      const ls = await fleet.admin(["device", "ls"]);
      expect(ls.code, ls.stderr).toBe(0);
      adminCalls++;
      const s = await show(fleet, r.id);
      if (s.status !== "running") break;
    }
    const done = await show(fleet, r.id);
    expect(done.status).toBe("completed");
    expect(done.devices.map((d) => d.state)).toEqual(Array(32).fill("healthy"));
    expect(adminCalls).toBeGreaterThan(0);
    for (const d of swarm.devices) expect(swarm.activations.filter((a) => a.device === d.name && a.targetPath === target), d.name).toHaveLength(1);

    // It did shed, and said so.
    expect(fleet.coordinator.output).toMatch(/warn shedding load: agents told to retry later .*shed=\d+/);
    // Shed calls are retried on the same connections: no reconnect storm.
    expect(proxy.accepted - acceptedBefore).toBeLessThan(10);
    for (const a of real.agents) expect(a.exitCode).toBeNull();
  }, 180_000);
});
