/**
 * Connections reset every few seconds while a rollout runs: agents reconnect, their outboxes
 * resend, and the rollout completes with every device activated exactly once. Agents and swarm
 * devices reach the coordinator through a fault proxy (their join string carries its address).
 */
import { describe, expect, it } from "vitest";
import { storeBackends, useProxiedFleet } from "./support/faults.ts";
import { waitFor } from "@flotilla/protocol/testing";
import { hosts, publish, realAgents, show, start, swarmOf } from "./support/rollouts.ts";

for (const backend of storeBackends) describe.skipIf(!backend.enabled)(`connection resets during a rollout, on ${backend.name}`, () => {
  const f = useProxiedFleet(backend.args);

  it("completes with every device activated exactly once", async () => {
    const { fleet, proxy, sandbox } = f;
    const path = await publish(fleet, sandbox, "webapp", "2.0.0");
    const swarm = await swarmOf(fleet, sandbox, hosts(10), 500);
    const real = await realAgents(fleet, sandbox, 2);
    const acceptedBefore = proxy.accepted;

    const r = await start(fleet, ["webapp@2.0.0", "--selector", "env=prod", "--waves", "50%,100%", "--max-parallel", "4"]);
    // Reset every connection through the proxy every 2 s, for at most a minute.
    const until = Date.now() + 60_000;
    let resets = 0;
    const done = await waitFor("the rollout to complete under resets", async () => {
      const s = await show(fleet, r.id);
      if (s.status === "completed" || s.status === "paused" || s.status === "failed") return s;
      if (Date.now() < until) {
        proxy.resetAll();
        resets++;
      }
      return undefined;
    }, 120_000, 2000);

    expect(resets).toBeGreaterThanOrEqual(2);
    expect(proxy.accepted - acceptedBefore).toBeGreaterThan(12);
    expect(done.status).toBe("completed");
    expect(done.devices.map((d) => d.state)).toEqual(Array(12).fill("healthy"));
    for (const d of swarm.devices) expect(swarm.activations.filter((a) => a.device === d.name && a.targetPath === path), d.name).toHaveLength(1);
    for (const name of real.names) {
      const steps = await fleet.adminJson<{ steps: { targetPath: string; step: string }[] }>(["device", "show", name]);
      expect(steps.steps.filter((s) => s.targetPath === path && s.step === "activating"), name).toHaveLength(1);
    }
    for (const a of real.agents) expect(a.exitCode).toBeNull();
  }, 180_000);
});
