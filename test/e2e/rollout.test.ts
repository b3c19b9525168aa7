/**
 * Rollouts end to end: a real coordinator process, the real CLI, and a swarm of 20+ devices
 * speaking the real agent protocol over real sockets (support/swarm.ts).
 */
import { Code, createClient } from "@connectrpc/connect";
import { adminv1, bearerInterceptor, coordinatorTransport } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { ownerToken, signedFleet } from "./support/releases.ts";
import { activatedAt, hosts, publish, realAgents, show, start, swarmOf, type PlanJson, type RolloutJson } from "./support/rollouts.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("rollouts in waves", () => {
  it("completes a three-wave rollout over 21 swarm devices and 2 real agents, activating every device of a wave before any of the next", async () => {
    const fleet = await signedFleet(sb);
    const target = await publish(fleet, sb, "webapp", "1.5.0");
    const swarm = await swarmOf(fleet, sb, hosts(21, 0), 30);
    const real = await realAgents(fleet, sb, 2);

    const r = await start(fleet, ["webapp@1.5.0", "--selector", "env=prod", "--waves", "1,50%,100%", "--max-parallel", "4"]);
    expect(r.status).toBe("running");
    expect(r.plan.ineligible).toEqual([]);
    expect(r.plan.waves.map((w) => w.devices.length)).toEqual([1, 11, 11]);

    const watch = await fleet.admin(["rollout", "watch", r.id]);
    expect(watch.stderr).toBe("");
    expect(watch.code).toBe(0);
    expect(watch.stdout).toMatch(new RegExp(`rollout ${r.id} completed: 23 healthy, 0 failed, 0 skipped`));
    expect(watch.stdout).toMatch(/wave 3 +100% \[#+\] 11\/11 healthy/);
    expect(watch.stdout).toMatch(/^  sw-\d\d \(wave 2\): healthy$/m);

    const done = await show(fleet, r.id);
    expect(done.status).toBe("completed");
    expect(done.devices.every((d) => d.state === "healthy")).toBe(true);

    // Activation times as the devices reported them: the swarm's and the real agents'.
    const waveOf = new Map(done.devices.map((d) => [d.name, d.wave]));
    const times = swarm.activations.filter((a) => a.targetPath === target).map((a) => ({ wave: waveOf.get(a.device)!, at: a.at }));
    for (const name of real.names) times.push({ wave: waveOf.get(name)!, at: await activatedAt(fleet, name, target) });
    expect(times).toHaveLength(23);
    const order = times.sort((a, b) => a.at - b.at).map((t) => t.wave);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    for (const d of swarm.devices) expect(d.notifications.get(target), d.name).toBe(1);

    const list = await fleet.adminJson<{ id: string; status: string; createdAt: string }[]>(["rollout", "ls"]);
    expect(list).toEqual([expect.objectContaining({ id: r.id, status: "completed", createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) })]);
  }, 180_000);

  it("pauses when failing health checks cross the threshold, and leaves the rest of the fleet untouched", async () => {
    const fleet = await signedFleet(sb);
    const target = await publish(fleet, sb, "webapp", "1.5.0");
    const failing = new Set(["sw-01", "sw-02", "sw-03"]);
    const swarm = await swarmOf(fleet, sb, hosts(20).map((h) => ({ ...h, failHealth: failing.has(h.hostname) })), 30);

    const r = await start(fleet, ["webapp@1.5.0", "--selector", "arch=x86_64", "--waves", "5,100%", "--failure-threshold", "5%", "--max-parallel", "5"]);
    expect(r.plan.waves[0]!.devices.map((d) => d.name)).toEqual(["sw-00", "sw-01", "sw-02", "sw-03", "sw-04"]);

    const watch = await fleet.admin(["rollout", "watch", r.id]);
    expect(watch.code).toBe(10);
    expect(watch.stderr).toMatch(new RegExp(`^error: rollout ${r.id} paused: failure threshold crossed: [23] of 20 devices failed \\(1 tolerated\\)$`, "m"));

    // Once every device of the first wave has finished, nothing else has been touched.
    const settled = await waitFor("the first wave to settle", async () => {
      const s = await show(fleet, r.id);
      return s.devices.filter((d) => d.wave === 1).every((d) => !["notified", "downloading", "verifying", "activating", "health-checking"].includes(d.state)) ? s : undefined;
    });
    expect(settled.status).toBe("paused");
    expect(settled.reason).toMatch(/failure threshold crossed/);
    const second = settled.devices.filter((d) => d.wave === 2);
    expect(second).toHaveLength(15);
    expect(second.every((d) => d.state === "pending")).toBe(true);
    for (const d of swarm.devices.filter((x) => second.some((s) => s.name === x.name))) expect(d.notifications.size, d.name).toBe(0);
    expect(swarm.activations.filter((a) => a.targetPath === target).map((a) => a.device).sort()).toEqual(expect.arrayContaining(["sw-00", "sw-01", "sw-02"]));
    expect(swarm.activations.every((a) => !second.some((s) => s.name === a.device))).toBe(true);

    const device = await fleet.adminJson<{ releases: { name: string; current: { version: string } | null }[] }>(["device", "show", "sw-01"]);
    expect(device.releases.find((x) => x.name === "webapp")?.current?.version ?? "").toBe("");
  }, 180_000);

  it("plans and starts the same assignment device for device, listing apart the devices that cannot take it and those offline", async () => {
    const fleet = await signedFleet(sb);
    await publish(fleet, sb, "webapp", "1.5.0", ["--arch", "x86_64"]);
    const swarm = await swarmOf(fleet, sb, [
      ...hosts(20),
      { hostname: "arm-1", arch: "aarch64" },
      { hostname: "arm-2", arch: "aarch64" },
      { hostname: "nixbox", capabilities: ["release:nixos"] },
    ]);
    await swarm.byName("sw-07").disconnect();
    await swarm.byName("sw-13").disconnect();
    await waitFor("two devices offline", async () => (await fleet.devices()).filter((d) => d.status === "offline").length === 2, 30_000, 250);

    const args = ["webapp@1.5.0", "--selector", "os=linux", "--waves", "1,10%,50%,100%"];
    const plan = await fleet.adminJson<PlanJson>(["rollout", "plan", ...args]);
    const assignment = (p: PlanJson) => p.waves.map((w) => w.devices.map((d) => d.id));
    expect(plan.waves.map((w) => [w.entry, w.devices.length])).toEqual([["1", 1], ["10%", 1], ["50%", 8], ["100%", 10]]);
    expect(plan.waves[0]!.devices[0]!.name).toBe("sw-00");
    expect(plan.waves[3]!.devices.slice(-2).map((d) => d.name)).toEqual(["sw-07", "sw-13"]);
    expect(plan.offline.map((d) => d.name)).toEqual(["sw-07", "sw-13"]);
    expect(plan.ineligible.map((d) => [d.name, d.reason])).toEqual([
      ["arm-1", "arch aarch64 not in x86_64"],
      ["arm-2", "arch aarch64 not in x86_64"],
      ["nixbox", "missing capability release:bundle"],
    ]);
    const text = await fleet.admin(["rollout", "plan", ...args]);
    expect(text.stdout).toMatch(/^wave 1 \(1\): 1 device\n {2}sw-00 /m);
    expect(text.stdout).toMatch(/^cannot take the release: 3$/m);
    expect(text.stdout).toMatch(/^offline now \(they get it when they return\): sw-07, sw-13$/m);

    const started = await start(fleet, [...args, "--approve-each-wave"]);
    expect(assignment(started.plan)).toEqual(assignment(plan));
    const recorded = await show(fleet, started.id);
    const byWave = plan.waves.map((w) => recorded.devices.filter((d) => d.wave === w.number).map((d) => d.id));
    expect(byWave).toEqual(assignment(plan));

    const again = await fleet.admin(["rollout", "start", ...args]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(new RegExp(`^error: device sw-\\d\\d is already in rollout ${started.id}, which is still active`, "m"));
    const list = await fleet.adminJson<RolloutJson[]>(["rollout", "ls"]);
    expect(list.map((x) => x.id)).toEqual([started.id]);
  }, 180_000);

  it("shows a rollout with more devices than a page, every device once: rollout show follows the pages, and GetRollout's pages chain to the full list", async () => {
    const fleet = await signedFleet(sb);
    await publish(fleet, sb, "webapp", "1.5.0");
    await swarmOf(fleet, sb, hosts(12));
    // Wave 2 waits for an approval that never comes: its 9 devices stay pending.
    const r = await start(fleet, ["webapp@1.5.0", "--selector", "env=prod", "--waves", "3,100%", "--approve-each-wave"]);
    const names = hosts(12).map((h) => h.hostname);

    // Pages of 5 devices: 12 take three requests, and each device is printed exactly once.
    const text = await fleet.admin(["rollout", "show", r.id, "--page-size", "5"]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stderr).toBe("");
    expect(text.stdout).toMatch(new RegExp(`^rollout ${r.id} webapp@1.5.0: running$`, "m"));
    expect(text.stdout).toMatch(/^.? wave 2 +100% \[-+\] 0\/9 healthy$/m);
    const printed = text.stdout.split("\n").filter((l) => /^sw-\d\d /.test(l)).map((l) => l.split(/\s+/)[0]);
    expect([...printed].sort()).toEqual(names);
    const json = await fleet.adminJson<RolloutJson>(["rollout", "show", r.id, "--page-size", "5", "--json"]);
    expect(json.devices.map((d) => d.name).sort()).toEqual(names);
    expect(json.waves.map((w) => w.total)).toEqual([3, 9]);
    expect(json.devices.map((d) => d.wave)).toEqual([1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2]);

    // --limit cuts and says so; the filters page as well.
    const cut = await fleet.admin(["rollout", "show", r.id, "--page-size", "2", "--limit", "5", "--json"]);
    expect(cut.code).toBe(0);
    expect((JSON.parse(cut.stdout) as RolloutJson).devices.map((d) => d.id)).toEqual(json.devices.slice(0, 5).map((d) => d.id));
    expect(cut.stderr).toBe("flotilla: showing the first 5 devices; more follow: without --limit every one is listed\n");
    const pending = await fleet.adminJson<RolloutJson>(["rollout", "show", r.id, "--page-size", "4", "--wave", "2", "--state", "pending", "--json"]);
    expect(pending.devices.map((d) => d.id)).toEqual(json.devices.slice(3).map((d) => d.id));
    expect(pending.waves.map((w) => w.total)).toEqual([3, 9]);

    // The RPC itself: pages of 5 chain through next_page_token to the same list; without a page
    // size (an older client) the first page holds up to 1000 devices, here all of them.
    const token = await ownerToken(fleet);
    const conn = await coordinatorTransport({ url: fleet.url, interceptors: [bearerInterceptor(() => token)] });
    sb.onCleanup(async () => conn.close());
    const client = createClient(adminv1.RolloutService, conn.transport);
    const pages: string[][] = [];
    let pageToken = "";
    do {
      const page = await client.getRollout({ id: r.id, pageSize: 5, pageToken });
      pages.push(page.rollout!.devices.map((d) => d.deviceId));
      expect(page.rollout!.waves.map((w) => w.total)).toEqual([3, 9]);
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(pages.map((p) => p.length)).toEqual([5, 5, 2]);
    expect(pages.flat()).toEqual(json.devices.map((d) => d.id));
    const whole = await client.getRollout({ id: r.id });
    expect(whole.rollout!.devices.map((d) => d.deviceId)).toEqual(json.devices.map((d) => d.id));
    expect(whole.nextPageToken).toBe("");
    await expect(client.getRollout({ id: r.id, pageToken: "not-a-token" })).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(client.getRollout({ id: r.id, state: "sleeping" })).rejects.toMatchObject({ code: Code.InvalidArgument });
    const bad = await fleet.admin(["rollout", "show", r.id, "--page-size", "0"]);
    expect(bad.stderr).toMatch(/invalid --page-size "0": expected a whole number from 1 to 1000/);
  }, 180_000);

  it("refuses an unknown release, an empty selection, waves that do not add up and an invalid selector before starting anything", async () => {
    const fleet = await signedFleet(sb);
    await publish(fleet, sb, "webapp", "1.5.0");
    await swarmOf(fleet, sb, hosts(20));
    const cases: [string[], number, RegExp][] = [
      [["webapp@9.9.9", "--selector", "os=linux"], 5, /^error: no release webapp@9\.9\.9$/],
      [["webapp@1.5.0", "--selector", "site=nowhere"], 1, /^error: selector "site=nowhere" selects no device that can take webapp@1\.5\.0$/],
      [["webapp@1.5.0", "--selector", "os=linux", "--waves", "10%,50%"], 2, /^error: the last wave must be 100%, not "50%"/],
      [["webapp@1.5.0", "--selector", "os=linux", "--waves", "1,50%,20%,100%"], 2, /^error: wave 3 \("20%"\): percentages must strictly increase/],
      [["webapp@1.5.0", "--selector", "os in (linux"], 2, /^error: invalid selector: /],
      [["webapp", "--selector", "os=linux"], 2, /^error: invalid release "webapp": expected name@version/],
    ];
    for (const [args, code, message] of cases) {
      for (const verb of ["plan", "start"]) {
        const r = await fleet.admin(["rollout", verb, ...args]);
        expect(r.stderr.trim().split("\n"), `${verb} ${args.join(" ")}`).toHaveLength(1);
        expect(r.stderr.trim(), `${verb} ${args.join(" ")}`).toMatch(message);
        expect(r.code, `${verb} ${args.join(" ")}`).toBe(code);
      }
    }
    expect(await fleet.adminJson<unknown[]>(["rollout", "ls"])).toEqual([]);
  }, 180_000);
});
