/**
 * The fleet simulator end to end: a real coordinator process, a real agent, and `flotilla sim`
 * with 200 simulated devices in worker processes, each with its own key and connection. They
 * enroll, show online, take a one-wave rollout with exactly the failures the seeded fail rate
 * chooses, and the simulator stops cleanly on SIGTERM.
 */
import { waitFor } from "@flotilla/protocol/testing";
import { failingDevices } from "@flotilla/agent/sim";
import { describe, expect, it } from "vitest";
import { signedFleet } from "./support/releases.ts";
import { publish, realAgents, start, waitForStatus } from "./support/rollouts.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();
const DEVICES = 200;
const SEED = 42;

describe("flotilla sim", () => {
  it("runs 200 simulated devices beside a real agent: they enroll, go online, take a rollout with the seeded failures, and stop on SIGTERM", async () => {
    const fleet = await signedFleet(sb);
    const target = await publish(fleet, sb, "webapp", "1.5.0");
    const real = await realAgents(fleet, sb, 1);

    const join = await fleet.joinToken(["--auto-approve", "--uses", "0", "--labels", "env=prod,sim=true"]);
    const sim = sb.spawn(
      ["sim", "--join", join, "--devices", String(DEVICES), "--workers", "2", "--fail-rate", "5%", "--seed", String(SEED), "--step-delay", "50ms", "--churn", "0%/min", "--status-interval", "5s",
       "--metrics-interval", "1s", "--metrics-ship-interval", "4s"],
      {},
      "sim",
    );
    await sim.waitForOutput(new RegExp(`sim: all ${DEVICES} devices online`), 300_000);
    const online = await waitFor(
      `${DEVICES + 1} devices online`,
      async () => {
        const list = await fleet.devices();
        const n = list.filter((d) => d.status === "online").length;
        return n === DEVICES + 1 ? list : undefined;
      },
      60_000,
      500,
    );
    expect(online.filter((d) => d.labels.sim === "true")).toHaveLength(DEVICES);
    expect(online.filter((d) => d.labels.sim === "true").every((d) => /^sim-\d{5}$/.test(d.name))).toBe(true);

    // Metric samples taken every second are shipped four at a time, as an agent's shipper lingers.
    const counter = (text: string, name: string) => Number(new RegExp(`^${name} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    const shipped = await waitFor(
      "metric samples from every simulated device",
      async () => {
        const text = await (await fetch(`${fleet.url}/metrics`)).text();
        const samples = counter(text, "flotilla_metric_samples_received_total");
        return samples >= 4 * DEVICES ? { samples, batches: counter(text, "flotilla_metric_batches_received_total") } : undefined;
      },
      60_000,
      500,
    );
    expect(shipped.samples / shipped.batches).toBeGreaterThanOrEqual(3.5);

    // Exactly round(5% of 200) = 10 simulated devices fail, the ones the seed chooses; the real agent succeeds.
    const failing = failingDevices(DEVICES, 0.05, SEED, target);
    expect(failing.size).toBe(10);
    const r = await start(fleet, ["webapp@1.5.0", "--selector", "env=prod", "--waves", "100%", "--failure-threshold", "20"]);
    expect(r.plan.waves.map((w) => w.devices.length)).toEqual([DEVICES + 1]);
    const done = await waitForStatus(fleet, r.id, "completed", 180_000);
    expect(done.reason).toBe(`${DEVICES + 1 - 10} healthy, 10 failed, 0 skipped`);
    const failedNames = done.devices.filter((d) => d.state === "failed" || d.state === "rolled-back").map((d) => d.name).sort();
    expect(failedNames).toEqual([...failing.keys()].map((i) => `sim-${String(i).padStart(5, "0")}`).sort());
    expect(done.devices.find((d) => d.name === real.names[0])?.state).toBe("healthy");
    await sim.waitForOutput(new RegExp(`sim: all ${DEVICES} devices received ${target}`));
    await sim.waitForOutput(new RegExp(`sim: ${target} installed on ${DEVICES} devices: ${DEVICES - 10} healthy, 10 failed`));

    // A label change on every simulated device reaches each of them as desired state.
    const labelled = await fleet.admin(["device", "label", "set", "--selector", "sim=true", "--yes", "wave=blue"]);
    expect(labelled.stdout).toBe(`labels changed on ${DEVICES} devices\n`);
    await sim.waitForOutput(new RegExp(`sim: all ${DEVICES} devices received label wave=blue`), 60_000);

    // SIGTERM: every device disconnects, the workers end, and the simulator exits 0.
    expect(await sim.stop("SIGTERM")).toBe(0);
    expect(sim.stdout).toMatch(/sim: stopped\n$/);
    expect(sim.stderr).toBe("");
    await waitFor(
      "only the real agent online",
      async () => (await fleet.devices()).filter((d) => d.status === "online").length === 1,
      30_000,
      500,
    );
  }, 600_000);
});
