/**
 * Rollouts end to end: a real coordinator process, the real CLI, and a swarm of 20+ devices
 * speaking the real agent protocol over real sockets (support/swarm.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Sandbox, waitFor } from "./harness.ts";
import { hosts, publish, show, signingFleet, start, swarmOf, waitForStatus } from "./support/rollouts.ts";

let sb: Sandbox;
beforeEach(() => {
  sb = new Sandbox();
});
afterEach(async () => {
  await sb.cleanup();
});

describe("rollouts in waves", () => {
  it("completes a three-wave rollout, activating every device of a wave before any device of the next", async () => {
    const fleet = await signingFleet(sb);
    const target = await publish(fleet, sb, "webapp", "1.5.0");
    const swarm = await swarmOf(fleet, sb, hosts(21, 0), 30);

    const r = await start(fleet, ["webapp@1.5.0", "--selector", "arch=x86_64", "--waves", "1,50%,100%", "--max-parallel", "4"]);
    expect(r.status).toBe("running");
    expect(r.plan.waves.map((w) => w.devices.length)).toEqual([1, 10, 10]);

    const watch = await fleet.admin(["rollout", "watch", r.id]);
    expect(watch.stderr).toBe("");
    expect(watch.code).toBe(0);
    expect(watch.stdout).toMatch(new RegExp(`rollout ${r.id} completed: 21 healthy, 0 failed, 0 skipped`));
    expect(watch.stdout).toMatch(/wave 3 +100% \[#+\] 10\/10 healthy/);

    const done = await show(fleet, r.id);
    expect(done.status).toBe("completed");
    expect(done.devices.every((d) => d.state === "healthy")).toBe(true);

    const waveOf = new Map(done.devices.map((d) => [d.name, d.wave]));
    const order = swarm.activations.filter((a) => a.targetPath === target).map((a) => waveOf.get(a.device));
    expect(order).toHaveLength(21);
    expect(order).toEqual([...order].sort());
    for (const d of swarm.devices) expect(d.notifications.get(target), d.name).toBe(1);

    const list = await fleet.adminJson<{ id: string; status: string; createdAt: string }[]>(["rollout", "ls"]);
    expect(list).toEqual([expect.objectContaining({ id: r.id, status: "completed", createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) })]);
  });
});
