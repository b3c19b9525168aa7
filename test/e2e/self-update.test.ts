/**
 * Agent self-update end to end (docs/self-update.md): one real coordinator for the file, real
 * `flotilla agent` processes started with self_update as a service manager would start them (the
 * launcher), and agent releases whose executables are small scripts: one that runs this
 * repository's agent reporting another version, one that exits at start, one that never
 * connects, one that is killed mid-handover. Every device ends on a working agent.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor, type Proc } from "@flotilla/protocol/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { fastAgentFlags, type DeviceJson, type Fleet } from "./support/fleet.ts";
import { deviceReleases, signedFleet } from "./support/releases.ts";
import { start, waitForStatus } from "./support/rollouts.ts";
import { flotillaBin, Sandbox } from "./support/sandbox.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const RELEASE = "flotilla-agent";
const coordinatorSandbox = new Sandbox();
let fleet: Fleet;
beforeAll(async () => {
  fleet = await signedFleet(coordinatorSandbox);
}, 60_000);
afterAll(() => coordinatorSandbox.cleanup());

const sb = useSandbox();
/** State directories of this test's agents: their children are stopped before the sandbox removes them. */
const stateDirs: string[] = [];
// Registered after useSandbox, so it runs before the sandbox's cleanup.
afterEach(async () => {
  for (const dir of stateDirs.splice(0)) await killChild(dir);
});

interface LauncherJson {
  current?: { version: string };
  pending?: { to: { version: string } };
  last?: { to: { version: string }; outcome: string; reason?: string };
}

const launcherState = async (stateDir: string): Promise<LauncherJson> =>
  JSON.parse(await readFile(join(stateDir, "agent-versions", "launcher.json"), "utf8").catch(() => "{}")) as LauncherJson;

/** SIGKILLs the agent the launcher in `stateDir` runs (its whole process group), if any. */
async function killChild(stateDir: string): Promise<void> {
  const rec = JSON.parse(await readFile(join(stateDir, "agent-versions", "child.json"), "utf8").catch(() => "null")) as { pid: number } | null;
  if (!rec) return;
  try {
    process.kill(-rec.pid, "SIGKILL");
  } catch {
    // gone already
  }
}

/** Starts `flotilla agent` with self-update on, as the service manager does. */
function launcher(stateDir: string, join: string | undefined, confirmMs: number): Proc {
  return sb.spawn(
    ["agent", "--state-dir", stateDir, ...(join ? ["--join", join] : []), ...fastAgentFlags, "--self-update", "true", "--self-update-confirm-ms", String(confirmMs)],
    {},
    `launcher ${stateDir.slice(-6)}`,
  );
}

/** Enrolls `n` agents labelled case=`label`, with self-update unless `plain`; waits until they are online. */
async function agents(label: string, n: number, opts: { confirmMs?: number; plain?: number } = {}) {
  const join = await fleet.joinToken(["--auto-approve", "--uses", String(n + (opts.plain ?? 0)), "--labels", `case=${label}`]);
  const started: { stateDir: string; proc: Proc }[] = [];
  for (let i = 0; i < n + (opts.plain ?? 0); i++) {
    const stateDir = await sb.dir("flotilla-agent-");
    stateDirs.push(stateDir);
    const proc = i < n ? launcher(stateDir, join, opts.confirmMs ?? 60_000) : sb.spawn(["agent", "--state-dir", stateDir, "--join", join, ...fastAgentFlags], {}, "plain agent");
    started.push({ stateDir, proc });
  }
  const devices = await waitFor(
    `${started.length} agents online (case=${label})`,
    async () => {
      const list = await fleet.adminJson<(DeviceJson & { capabilities: string[] })[]>(["device", "ls", "--selector", `case=${label}`]);
      const ready = list.filter((d) => d.status === "online" && d.capabilities.includes("release:bundle"));
      return ready.length === started.length && list.filter((d) => d.capabilities.includes("release:agent")).length === n ? list : undefined;
    },
    60_000,
    250,
  );
  return { started, devices };
}

/** Writes an agent executable: a script with `body`, by default this repository's agent reporting `version`. */
async function executable(version: string, body?: string): Promise<string> {
  const path = join(await sb.dir("flotilla-exe-"), "flotilla");
  const run = `FLOTILLA_TEST_AGENT_VERSION=${version} exec "${process.execPath}" "${flotillaBin}" "$@"`;
  await writeFile(path, `#!/bin/sh\n# flotilla ${version}\n${body ?? run}\n`, { mode: 0o755 });
  return path;
}

async function release(file: string, version: string): Promise<void> {
  const r = await fleet.admin(["release", "create", file, "--name", RELEASE, "--version", version, "--kind", "agent"]);
  if (r.code !== 0) throw new Error(`release create failed (${r.code}): ${r.stderr}`);
}

const versions = async (label: string) => (await fleet.devices(`case=${label}`)).map((d) => [d.status, d.agentVersion]);

describe("agent self-update through a rollout", () => {
  it("updates every launched agent, which reconnects on the new version; an agent without self-update is ineligible", async () => {
    const { started } = await agents("good", 2, { plain: 1 });
    await release(await executable("0.2.0"), "0.2.0");
    expect((await fleet.devices("case=good,agent.version!=0.2.0")).length).toBe(3);

    const r = await start(fleet, [`${RELEASE}@0.2.0`, "--selector", "case=good", "--waves", "1,100%"]);
    expect(r.plan.ineligible.map((d) => d.reason)).toEqual([
      "missing capability release:agent: this agent cannot update itself (it runs without self_update, or is older than self-update)",
    ]);
    expect(r.plan.waves.flatMap((w) => w.devices)).toHaveLength(2);
    const done = await waitForStatus(fleet, r.id, "completed", 120_000);
    expect(done.devices.map((d) => d.state)).toEqual(["healthy", "healthy"]);

    // Both report 0.2.0 (Watch and facts); the plain agent is the one outdated agent left.
    const updated = await waitFor("facts of the new version", async () => {
      const left = await fleet.devices("case=good,agent.version!=0.2.0");
      return left.length === 1 ? left : undefined;
    }, 30_000, 250);
    expect((updated[0] as DeviceJson & { capabilities: string[] }).capabilities).not.toContain("release:agent");
    expect((await versions("good")).sort()).toEqual([["online", "0.1.0"], ["online", "0.2.0"], ["online", "0.2.0"]]);
    const table = await fleet.admin(["device", "ls", "--selector", "case=good"]);
    expect(table.stdout.split("\n")[0]).toMatch(/^NAME\s+STATUS\s+AGENT\s+ARCH/);
    expect(table.stdout.match(/\b0\.2\.0\b/g)).toHaveLength(2);
    for (const { stateDir } of started.slice(0, 2)) {
      expect(await launcherState(stateDir)).toMatchObject({ current: { version: "0.2.0" }, last: { outcome: "healthy" } });
    }
    for (const d of done.devices) {
      const rel = (await deviceReleases(fleet, d.name)).releases.find((x) => x.name === RELEASE);
      expect(rel?.current?.version, d.name).toBe("0.2.0");
    }
  }, 240_000);

  it("restores the previous agent when the new executable exits at start, and the rollout counts the failure", async () => {
    const { started, devices } = await agents("exits", 1);
    await release(await executable("0.3.0", 'echo "0.3.0 cannot start" >&2\nexit 3'), "0.3.0");
    const r = await start(fleet, [`${RELEASE}@0.3.0`, "--selector", "case=exits", "--waves", "100%"]);
    const done = await waitForStatus(fleet, r.id, "paused", 120_000);
    expect(done.reason).toBe("failure threshold crossed: 1 of 1 devices failed (0 tolerated)");
    expect(done.devices.map((d) => [d.state, d.error])).toEqual([["rolled-back", expect.stringMatching(/the new agent 0\.3\.0 exited with code 3 before it reached the coordinator/)]]);
    expect(done.waves[0]).toMatchObject({ failed: 1, healthy: 0 });
    expect(started[0]!.proc.output).toContain("0.3.0 cannot start");
    await waitFor("the device back online", async () => ((await versions("exits"))[0]?.[0] === "online" ? true : undefined), 30_000, 250);
    expect(await versions("exits")).toEqual([["online", "0.1.0"]]);
    const steps = (await deviceReleases(fleet, devices[0]!.name)).steps.filter((s) => s.name === RELEASE).map((s) => s.step);
    expect(steps.at(-1)).toBe("rolled-back");
    expect(await launcherState(started[0]!.stateDir)).toMatchObject({ last: { outcome: "rolled-back", to: { version: "0.3.0" } } });
    expect((await launcherState(started[0]!.stateDir)).current).toBeUndefined();
  }, 180_000);

  it("restores the previous agent when the new executable starts but never reaches the coordinator within the confirm window", async () => {
    const { started, devices } = await agents("silent", 1, { confirmMs: 4000 });
    await release(await executable("0.4.0", "exec sleep 600"), "0.4.0");
    const r = await start(fleet, [`${RELEASE}@0.4.0`, "--selector", "case=silent", "--waves", "100%"]);
    // While the silent executable runs, nothing answers for the device.
    await waitFor("the handover to 0.4.0", async () => ((await launcherState(started[0]!.stateDir)).pending ? true : undefined), 60_000, 100);
    const done = await waitForStatus(fleet, r.id, "paused", 120_000);
    expect(done.devices.map((d) => [d.state, d.error])).toEqual([["rolled-back", expect.stringMatching(/the new agent 0\.4\.0 did not reach the coordinator within 4 s/)]]);
    expect(await versions("silent")).toEqual([["online", "0.1.0"]]);
    const rel = (await deviceReleases(fleet, devices[0]!.name)).releases.find((x) => x.name === RELEASE);
    expect(rel?.current?.version).toBe("0.1.0");
  }, 180_000);

  it("ends on a working agent when the launcher and its agent are killed mid-handover and the service manager starts it again", async () => {
    const { started } = await agents("killed", 1);
    const { stateDir, proc } = started[0]!;
    // The new agent takes a few seconds to start: the kill lands while it is on probation.
    await release(await executable("0.5.0", `sleep 3\nFLOTILLA_TEST_AGENT_VERSION=0.5.0 exec "${process.execPath}" "${flotillaBin}" "$@"`), "0.5.0");
    const r = await start(fleet, [`${RELEASE}@0.5.0`, "--selector", "case=killed", "--waves", "100%"]);
    await waitFor("the handover to 0.5.0", async () => ((await launcherState(stateDir)).pending ? true : undefined), 60_000, 50);
    await proc.stop("SIGKILL");
    await killChild(stateDir);

    const again = launcher(stateDir, undefined, 60_000);
    await again.waitForOutput(/a handover was interrupted; restoring the previous agent/);
    const done = await waitForStatus(fleet, r.id, "paused", 120_000);
    expect(done.devices.map((d) => [d.state, d.error])).toEqual([["rolled-back", "the agent was stopped during the handover to 0.5.0"]]);
    await waitFor("the device online on 0.1.0", async () => (JSON.stringify(await versions("killed")) === JSON.stringify([["online", "0.1.0"]]) ? true : undefined), 30_000, 250);

    // The same release, deployed again, goes through: nothing was left half-done.
    expect((await fleet.admin(["rollout", "abort", r.id])).code).toBe(0);
    const next = await start(fleet, [`${RELEASE}@0.5.0`, "--selector", "case=killed", "--waves", "100%"]);
    expect((await waitForStatus(fleet, next.id, "completed", 120_000)).devices.map((d) => d.state)).toEqual(["healthy"]);
    await waitFor("the device online on 0.5.0", async () => (JSON.stringify(await versions("killed")) === JSON.stringify([["online", "0.5.0"]]) ? true : undefined), 30_000, 250);
  }, 240_000);
});
