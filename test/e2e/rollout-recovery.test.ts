/**
 * Rollouts that outlive their coordinator and their devices: a SIGKILLed coordinator resumes
 * where the database says it stood; offline devices converge when they return, or are skipped
 * after the deadline. Real coordinator processes, a swarm speaking the real agent protocol.
 */
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { freshPostgresDatabase } from "./support/fleet.ts";
import { signedFleet } from "./support/releases.ts";
import { hosts, publish, show, start, swarmOf, waitForStatus } from "./support/rollouts.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("rollouts across restarts and outages", () => {
  const databases: { name: string; enabled: boolean; args(): Promise<string[]> }[] = [
    { name: "SQLite", enabled: true, args: () => Promise.resolve([]) },
    {
      name: "PostgreSQL",
      enabled: Boolean(process.env.FLOTILLA_TEST_POSTGRES_URL),
      args: async () => ["--database-url", await freshPostgresDatabase(sb)],
    },
  ];
  for (const db of databases) {
    it.skipIf(!db.enabled)(`continues after the coordinator on ${db.name} is killed with SIGKILL mid-wave: no device notified or activated twice, no wave skipped`, async () => {
      const fleet = await signedFleet(sb, await db.args());
      const target = await publish(fleet, sb, "webapp", "1.5.0");
      const swarm = await swarmOf(fleet, sb, hosts(20), 150);

      const r = await start(fleet, ["webapp@1.5.0", "--selector", "os=linux", "--waves", "2,50%,100%", "--max-parallel", "3"]);
      const mid = await waitFor(
        "the second wave under way, partly healthy",
        async () => {
          const s = await show(fleet, r.id);
          const wave2 = s.devices.filter((d) => d.wave === 2);
          return s.currentWave === 2 && wave2.some((d) => d.state === "healthy") && wave2.some((d) => d.state !== "healthy") ? s : undefined;
        },
        90_000,
        100,
      );
      expect(mid.status).toBe("running");

      await fleet.coordinator.stop("SIGKILL");
      const activationsAtKill = swarm.activations.length;
      await fleet.startCoordinator();

      const done = await waitForStatus(fleet, r.id, "completed", 120_000);
      expect(done.reason).toBe("20 healthy, 0 failed, 0 skipped");
      expect(done.devices.every((d) => d.state === "healthy")).toBe(true);
      expect(swarm.activations.length).toBeGreaterThan(activationsAtKill);

      const waveOf = new Map(done.devices.map((d) => [d.name, d.wave]));
      const activations = swarm.activations.filter((a) => a.targetPath === target);
      expect(activations.map((a) => a.device).sort()).toEqual(swarm.devices.map((d) => d.name).sort());
      const order = activations.map((a) => waveOf.get(a.device)!);
      expect(order).toEqual([...order].sort((a, b) => a - b));
      for (const d of swarm.devices) expect(d.notifications.get(target), d.name).toBe(1);
    }, 240_000);
  }

  it("gives an offline device the release when it reconnects, and skips one still offline at the deadline", async () => {
    const fleet = await signedFleet(sb);
    const target = await publish(fleet, sb, "webapp", "1.5.0");
    const swarm = await swarmOf(fleet, sb, hosts(20), 30);
    const late = swarm.byName("sw-18");
    const gone = swarm.byName("sw-19");
    await late.disconnect();
    await gone.disconnect();
    await waitFor("two devices offline", async () => (await fleet.devices()).filter((d) => d.status === "offline").length === 2, 30_000, 250);

    const r = await start(fleet, ["webapp@1.5.0", "--selector", "os=linux", "--waves", "50%,100%", "--deadline", "30s"]);
    expect(r.plan.offline.map((d) => d.name)).toEqual(["sw-18", "sw-19"]);
    await waitFor(
      "every online device healthy",
      async () => (await show(fleet, r.id)).devices.filter((d) => d.state === "healthy").length === 18,
      60_000,
      250,
    );
    const waiting = await show(fleet, r.id);
    expect(waiting.status).toBe("running");
    expect(waiting.devices.filter((d) => d.name === "sw-18" || d.name === "sw-19").map((d) => d.state)).toEqual(["pending", "pending"]);
    expect(late.notifications.size).toBe(0);

    late.connect();
    await waitFor("sw-18 healthy after reconnecting", async () => (await show(fleet, r.id)).devices.find((d) => d.name === "sw-18")?.state === "healthy", 30_000, 250);
    expect(late.current.get("webapp")?.targetPath).toBe(target);

    const done = await waitForStatus(fleet, r.id, "completed", 90_000);
    expect(done.reason).toBe("19 healthy, 0 failed, 1 skipped");
    const skipped = done.devices.find((d) => d.name === "sw-19");
    expect(skipped?.state).toBe("skipped");
    expect(skipped?.error).toMatch(/deadline/);
    expect(gone.notifications.size).toBe(0);
    const desired = await fleet.adminJson<{ releases: unknown[] }>(["device", "show", "sw-19"]);
    expect(desired.releases).toEqual([]);
  }, 240_000);
});
