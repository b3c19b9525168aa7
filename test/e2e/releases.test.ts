/**
 * Signed releases end to end: real coordinator, CLI and agent processes. Every refusal must
 * happen before the agent activates anything (and, where the artifact is not at fault, before it
 * downloads anything): the tests check the steps the device reported and its staging directory.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import {
  artifact,
  bundleAgent,
  bundleTarball,
  createRelease,
  deviceReleases,
  served,
  serverFlags,
  sha256,
  signedFleet,
  stagedFiles as staged,
  stepNames as names,
  waitForEnd,
} from "./support/releases.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("releases refused by the coordinator", () => {
  it("refuses to deploy a kind the device does not declare", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const { path } = await artifact(dir, "agent.bin", 1000);
    await createRelease(fleet, path, "flotilla-agent", "9.9.9", ["--kind", "agent"]);
    const join0 = await fleet.joinToken(["--auto-approve"]);
    fleet.startAgent(await sb.dir("flotilla-agent-"), join0);
    const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    const r = await fleet.admin(["device", "deploy", device.name, "flotilla-agent@9.9.9"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`^error: device ${device.name} cannot activate agent releases`, "m"));
  });
});

describe("releases verified by the agent", () => {
  it("installs a release and reports each step with its time; device show prints current and desired", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    const { path, data } = await bundleTarball(dir, "app.tar.gz", { port, padding: 200_000 });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    const deploy = await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect(deploy.code, deploy.stderr).toBe(0);

    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz");
    expect(names(steps)).toEqual(expect.arrayContaining(["checking", "downloading", "verifying", "activating", "healthy"]));
    expect(names(steps).indexOf("verifying")).toBeLessThan(names(steps).indexOf("activating"));
    const done = steps.filter((s) => s.step === "downloading").at(-1)!;
    expect([done.bytesDone, done.bytesTotal]).toEqual([data.length, data.length]);
    for (const s of steps) expect(Date.parse(s.time)).toBeGreaterThan(Date.now() - 600_000);
    expect(await served(port)).toBe("1.0.0");
    // What the supervised process writes reaches the coordinator's logs, under the release's name.
    await waitFor("the service's stdout in the device's logs", async () => {
      const logs = await fleet.admin(["logs", name, "--unit", "app"]);
      return logs.stdout.includes(`serving 1.0.0 on ${port}`);
    });

    const show = await deviceReleases(fleet, name);
    expect(show.releases).toEqual([
      expect.objectContaining({ name: "app", current: { version: "1.0.0", counter: 1 }, desired: expect.objectContaining({ version: "1.0.0", counter: 1 }) }),
    ]);
    const text = await fleet.admin(["device", "show", name]);
    expect(text.stdout).toContain("current 1.0.0 (#1), desired 1.0.0 (#1)");
    expect(text.stdout).toMatch(/\d{4}-\d\d-\d\dT\S+Z {2}app\/1\/app\.tar\.gz {2}healthy/);
    expect(text.stderr).toBe("");
    // Fewer steps asked for than there are: the newest one only, and stderr says what was left out.
    const one = await fleet.admin(["device", "show", name, "--steps", "1"]);
    expect(one.stdout.split("\n").filter((l) => l.includes("app/1/app.tar.gz"))).toEqual([expect.stringMatching(/ {2}healthy$/)]);
    expect(one.stderr).toBe("device show: older release steps were left out; --steps 1000 shows up to 1000\n");
    expect(await staged(stateDir)).toEqual([]);
  });

  it("resumes the download after a kill -9 of the agent mid-download, and ends healthy", async () => {
    const fleet = await signedFleet(sb);
    const { agent, name, stateDir } = await bundleAgent(fleet, sb, ["--download-bytes-per-second", "1500000"]);
    const dir = await sb.dir();
    const port = await freePort();
    const { path, data } = await bundleTarball(dir, "app.tar.gz", { port, padding: 6 * 1024 * 1024 });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);

    const part = join(stateDir, "releases", "staging", `${sha256(data)}.part`);
    await waitFor("a part of the download on disk", async () => (await stat(part)).size > 1024 * 1024, 30_000);
    await agent.stop("SIGKILL");
    const partial = (await stat(part)).size;
    expect(partial).toBeLessThan(data.length);

    fleet.startAgent(stateDir, undefined, ["--download-bytes-per-second", "1500000"], "agent-restarted");
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz", 90_000);
    expect(steps.at(-1)!.step).toBe("healthy");
    const downloads = steps.filter((s) => s.step === "downloading");
    expect(downloads.filter((s) => s.bytesDone === 0)).toHaveLength(1);
    expect(downloads.some((s) => s.bytesDone === partial)).toBe(true);
    expect(names(steps).filter((s) => s === "checking")).toHaveLength(1);
    expect(names(steps).filter((s) => s === "activating")).toHaveLength(1);
    expect(await served(port)).toBe("1.0.0");
  });

  it("rolls back a release whose health check fails, and the old one keeps running", async () => {
    const fleet = await signedFleet(sb);
    const { name } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app-1.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    await createRelease(fleet, (await bundleTarball(dir, "app-2.tar.gz", { port, health: 500 })).path, "app", "2.0.0", serverFlags(port, ["--health-window-seconds", "4"]));
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect((await waitForEnd(fleet, name, "app/1/app-1.tar.gz")).at(-1)!.step).toBe("healthy");

    await fleet.admin(["device", "deploy", name, "app@2.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/2/app-2.tar.gz");
    expect(names(steps)).toEqual(expect.arrayContaining(["activating", "health-checking", "rolled-back"]));
    expect(steps.at(-1)!.error).not.toBe("");
    expect((await deviceReleases(fleet, name)).releases[0]?.current).toEqual({ version: "1.0.0", counter: 1 });
    await waitFor("the old release serving again", async () => (await served(port)) === "1.0.0");
  });

  it("ends on a running, healthy release after a kill -9 of the agent during activation", async () => {
    const fleet = await signedFleet(sb);
    const { agent, name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app-1.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    // Version 2 must also stay up for a while, so the kill lands while it is being checked.
    await createRelease(fleet, (await bundleTarball(dir, "app-2.tar.gz", { port })).path, "app", "2.0.0", serverFlags(port, ["--health-up-seconds", "6"]));
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect((await waitForEnd(fleet, name, "app/1/app-1.tar.gz")).at(-1)!.step).toBe("healthy");

    await fleet.admin(["device", "deploy", name, "app@2.0.0"]);
    await waitFor("version 2 being health-checked", async () =>
      (await deviceReleases(fleet, name)).steps.some((s) => s.targetPath === "app/2/app-2.tar.gz" && s.step === "health-checking"),
    );
    await agent.stop("SIGKILL");

    fleet.startAgent(stateDir, undefined, [], "agent-restarted");
    const steps = await waitForEnd(fleet, name, "app/2/app-2.tar.gz", 90_000);
    const end = steps.at(-1)!;
    expect(["healthy", "rolled-back"]).toContain(end.step);
    const version = end.step === "healthy" ? "2.0.0" : "1.0.0";
    expect((await deviceReleases(fleet, name)).releases[0]?.current?.version).toBe(version);
    await waitFor(`version ${version} serving`, async () => (await served(port)) === version);
    expect(names(steps).filter((s) => s === "activating")).toHaveLength(1);
  });
});
