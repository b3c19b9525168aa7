/**
 * `rollout abort --roll-back` end to end: a real coordinator, the real CLI signing with the
 * admin's key, 2 real agents (whose anti-rollback check is what makes a plain return to the
 * earlier counter impossible) and 20 swarm devices speaking the real agent protocol.
 */
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { type Fleet } from "./support/fleet.ts";
import { signedFleet } from "./support/releases.ts";
import { hosts, publish, realAgents, show, start, swarmOf, waitForStatus } from "./support/rollouts.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

interface DeviceReleases {
  releases: { name: string; current: { version: string; counter: number } | null; desired: { version: string; counter: number } }[];
}

const webapp = async (fleet: Fleet, device: string) => (await fleet.adminJson<DeviceReleases>(["device", "show", device])).releases.find((r) => r.name === "webapp");

/** What a real agent's current webapp bundle says it is (`# webapp VERSION` in bin/app), and its directory. */
async function runningBundle(stateDir: string): Promise<{ dir: string; header: string }> {
  const link = execFileSync("find", [stateDir, "-path", "*/webapp/current"], { encoding: "utf8" }).trim();
  if (!link) throw new Error(`no webapp/current under ${stateDir}`);
  const dir = execFileSync("readlink", ["-f", link], { encoding: "utf8" }).trim();
  return { dir, header: (await readFile(join(dir, "bin", "app"), "utf8")).split("\n")[1] ?? "" };
}

/**
 * A fleet of 2 real agents and 20 swarm devices all running webapp 1.4.0 (#1), webapp 1.5.0 (#2)
 * published, and a rollout of 1.5.0 whose first wave (every real agent, and the swarm devices
 * the plan puts before them) has taken it and waits for approval.
 */
async function halfwayRollout() {
  const fleet = await signedFleet(sb);
  await publish(fleet, sb, "webapp", "1.4.0");
  const swarm = await swarmOf(fleet, sb, hosts(20), 30);
  const real = await realAgents(fleet, sb, 2);
  const stateDirs = real.agents.map((a) => a.child.spawnargs[a.child.spawnargs.indexOf("--state-dir") + 1]!);
  const first = await start(fleet, ["webapp@1.4.0", "--selector", "env=prod", "--waves", "100%"]);
  await waitForStatus(fleet, first.id, "completed", 120_000);
  const newTarget = await publish(fleet, sb, "webapp", "1.5.0");

  // Plans put offline devices last: with three swarm devices away, the first wave of 19 holds
  // every online device, the real agents among them, and the second the three.
  const away = ["sw-17", "sw-18", "sw-19"];
  for (const name of away) await swarm.byName(name).disconnect();
  await waitFor("three devices offline", async () => (await fleet.devices()).filter((d) => d.status === "offline").length === 3, 30_000, 250);
  const r = await start(fleet, ["webapp@1.5.0", "--selector", "env=prod", "--waves", "19,100%", "--approve-each-wave"]);
  const wave1 = r.plan.waves[0]!.devices.map((d) => d.name);
  expect(wave1).toEqual(expect.arrayContaining(real.names));
  expect(r.plan.waves[1]!.devices.map((d) => d.name)).toEqual(away);
  await waitFor("the first wave to take 1.5.0", async () => {
    const s = await show(fleet, r.id);
    return s.waves[0]!.healthy === wave1.length;
  }, 120_000, 300);
  for (const [i, dir] of stateDirs.entries()) expect((await runningBundle(dir)).header, real.names[i]).toBe("# webapp 1.5.0");
  return { fleet, swarm, real, stateDirs, rollout: r, wave1, away, newTarget };
}

describe("rollout abort --roll-back", () => {
  it("returns the devices the rollout updated to their previous release through a copy signed above the rollout's counter, and leaves the rest untouched", async () => {
    const { fleet, swarm, real, stateDirs, rollout, wave1, away, newTarget } = await halfwayRollout();

    const abort = await fleet.admin(["rollout", "abort", rollout.id, "--roll-back"]);
    expect(abort.code, abort.stderr).toBe(0);
    expect(abort.stderr).toBe("re-signed webapp 1.4.0 as #3, so devices may return to it\n");
    expect(abort.stdout).toMatch(new RegExp(`^rollout ${rollout.id} webapp@1\\.5\\.0: aborted \\(aborted by \\S+; ${wave1.length} devices returning to their previous release\\)$`, "m"));
    expect(abort.stdout).toMatch(new RegExp(`^  ${real.names[0]}: returning to 1\\.4\\.0 \\(#3\\)$`, "m"));

    // The copy is release #3: 1.4.0's bytes and metadata, signed with a higher counter.
    const releases = await fleet.adminJson<{ version: string; counter: number; sha256: string; targetPath: string }[]>(["release", "ls", "--name", "webapp"]);
    const byCounter = new Map(releases.map((x) => [x.counter, x]));
    expect(byCounter.get(3)).toMatchObject({ version: "1.4.0", sha256: byCounter.get(1)!.sha256, targetPath: "webapp/3/webapp.tar.gz" });

    const done = await waitFor("the first wave to be back on 1.4.0", async () => {
      const s = await show(fleet, rollout.id);
      return s.devices.filter((d) => wave1.includes(d.name)).every((d) => d.state === "rolled-back") ? s : undefined;
    }, 120_000, 300);
    expect(done.status).toBe("aborted");
    for (const d of done.devices.filter((x) => wave1.includes(x.name))) expect(d.error, d.name).toMatch(/^returned to \S+ \(#3\)$/);
    for (const name of real.names) expect(await webapp(fleet, name), name).toMatchObject({ current: { version: "1.4.0", counter: 3 }, desired: { version: "1.4.0", counter: 3 } });
    for (const [i, dir] of stateDirs.entries()) expect((await runningBundle(dir)).header, real.names[i]).toBe("# webapp 1.4.0");
    for (const name of wave1.filter((n) => n.startsWith("sw-"))) expect(swarm.byName(name).current.get("webapp")?.targetPath, name).toBe("webapp/3/webapp.tar.gz");

    // The second wave, back online after the abort, never hears of 1.5.0 and still runs 1.4.0 (#1).
    expect(done.devices.filter((d) => away.includes(d.name)).map((d) => d.state)).toEqual(["pending", "pending", "pending"]);
    for (const name of away) swarm.byName(name).connect();
    await waitFor("every device online", async () => (await fleet.devices()).every((d) => d.status === "online"), 30_000, 250);
    for (const name of away) {
      expect((await webapp(fleet, name))?.desired.counter, name).toBe(1);
      expect(swarm.byName(name).notifications.get(newTarget) ?? 0, name).toBe(0);
      expect(swarm.byName(name).current.get("webapp")?.targetPath, name).toBe("webapp/1/webapp.tar.gz");
    }

    // Nothing holds the devices any more: the next rollout may take them.
    const again = await fleet.admin(["rollout", "plan", "webapp@1.5.0", "--selector", "env=prod"]);
    expect(again.code).toBe(0);
    const next = await start(fleet, ["webapp@1.5.0", "--selector", "env=prod", "--waves", "100%"]);
    expect(next.status).toBe("running");
  }, 300_000);

  it("is refused, changing nothing, when the copy is signed by a key outside the root or when an older client sends no copy", async () => {
    const { fleet, rollout, wave1 } = await halfwayRollout();
    const before = await show(fleet, rollout.id);

    // A key the organization's root does not list: the coordinator refuses the targets it signed.
    const stranger = join(await sb.dir("flotilla-key-"), "stranger.key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", stranger]);
    const wrongKey = await fleet.admin(["rollout", "abort", rollout.id, "--roll-back", "--key-file", stranger]);
    expect(wrongKey.code).toBe(4);
    expect(wrongKey.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^error: .*targets metadata is not signed by .* threshold of keys/)]);

    // A client that sends roll_back without a re-signed copy (as one from before copies existed would).
    const token = (await fleet.admin(["token", "create", "abort-test", "--role", "deployer"])).stdout.trim().split("\n").pop()!;
    const res = await fetch(`${fleet.url}/flotilla.admin.v1.RolloutService/AbortRollout`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ id: rollout.id, rollBack: true }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe("failed_precondition");
    expect(body.message).toMatch(/^cannot roll back: agents refuse a counter below the #2 they run, so webapp \S+ \(#1\) must be signed again with a higher counter/);

    const after = await show(fleet, rollout.id);
    expect(after.status).toBe("running");
    expect(after.devices.map((d) => [d.name, d.state])).toEqual(before.devices.map((d) => [d.name, d.state]));
    expect((await fleet.adminJson<{ counter: number }[]>(["release", "ls", "--name", "webapp"])).map((r) => r.counter).sort()).toEqual([1, 2]);
    for (const name of wave1) expect((await webapp(fleet, name))?.desired.counter, name).toBe(2);
  }, 300_000);
});
