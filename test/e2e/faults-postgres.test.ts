/**
 * The database restarting under a running coordinator is normal weather: calls fail cleanly
 * with `unavailable` while it is down, and everything works again once it is back, without
 * restarting the coordinator. Runs on a PostgreSQL server of the test's own.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@flotilla/protocol/testing";
import { Fleet } from "./support/fleet.ts";
import { Sandbox } from "./support/sandbox.ts";
import { postgresBinDir, PrivatePostgres } from "./support/private-postgres.ts";
import { hosts, publish, show, start, swarmOf, waitForStatus } from "./support/rollouts.ts";

const hasServer = Boolean(await postgresBinDir());

describe.skipIf(!hasServer)("PostgreSQL restarted under a running coordinator", () => {
  const sandbox = new Sandbox();
  let pg: PrivatePostgres;
  let fleet: Fleet;

  beforeAll(async () => {
    pg = await PrivatePostgres.start();
    sandbox.onCleanup(() => pg.close());
    fleet = await new Fleet(sandbox, ["--database-url", pg.url]).start();
    const r = await fleet.admin(["signing-key", "add"]);
    if (r.code !== 0) throw new Error(`signing-key add failed: ${r.stderr}`);
  });
  afterAll(() => sandbox.cleanup());

  it("answers unavailable while the database is down and recovers by itself", async () => {
    const agent = fleet.startAgent(await sandbox.dir(), await fleet.joinToken(["--auto-approve"]));
    const dev = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"), 30_000);

    await pg.stopServer();
    const down = await fleet.admin(["device", "ls"]);
    expect(down.code).toBe(6);
    expect(down.stderr.trim().split("\n")).toHaveLength(1);
    expect(down.stderr).toMatch(/database is unavailable/);
    // A label change while the database is down is refused whole, not half-written.
    const refused = await fleet.admin(["device", "label", "set", dev.name, "while=down"]);
    expect(refused.code).toBe(6);

    await pg.startServer();
    await waitFor("admin calls to work again", async () => (await fleet.admin(["device", "ls"])).code === 0, 30_000, 500);
    expect((await fleet.admin(["device", "label", "set", dev.name, "after=up"])).code).toBe(0);
    const back = await waitFor("the device online with its new label applied", async () => {
      const d = await fleet.device(dev.name);
      return d?.status === "online" && d.observedGeneration === d.generation && d.labels.after === "up" ? d : undefined;
    }, 30_000, 500);
    expect(back.labels.while).toBeUndefined();
    expect(fleet.coordinator.exitCode).toBeNull();
    expect(agent.exitCode).toBeNull();
  }, 120_000);

  it("completes a rollout that was under way when the database restarted, activating every device once", async () => {
    const target = await publish(fleet, sandbox, "webapp", "1.0.0");
    const swarm = await swarmOf(fleet, sandbox, hosts(12), 400);
    const r = await start(fleet, ["webapp@1.0.0", "--selector", "env=prod", "--waves", "50%,100%", "--max-parallel", "4"]);
    await waitFor("the first devices healthy", async () => (await show(fleet, r.id)).devices.some((d) => d.state === "healthy"), 60_000, 250);

    await pg.stopServer();
    expect((await fleet.admin(["rollout", "show", r.id])).code).toBe(6);
    await pg.startServer();

    const done = await waitForStatus(fleet, r.id, "completed", 120_000);
    expect(done.devices.map((d) => d.state)).toEqual(Array(12).fill("healthy"));
    for (const d of swarm.devices) expect(swarm.activations.filter((a) => a.device === d.name && a.targetPath === target), d.name).toHaveLength(1);
    expect(fleet.coordinator.exitCode).toBeNull();
  }, 180_000);
});
