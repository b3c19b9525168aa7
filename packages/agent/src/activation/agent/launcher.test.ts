import { spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { groupAlive, procStat, writePidRecord } from "../bundle/process-group.ts";
import { AGENT_NODE_OPTIONS, LAUNCHER_DIR_ENV, runLauncher, withoutAgentNodeOptions } from "./launcher.ts";
import { afterRestart, beginHandover, confirmHandover, executablePath, rollBackHandover, toRun, type LauncherState, type StagedExecutable } from "./launcher-state.ts";

const CHILD = join(import.meta.dirname, "testing", "child.mjs");
const tmp = useTempDir("flotilla-launcher-");
const stops: AbortController[] = [];
const running: Promise<number>[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) s.abort();
  await Promise.all(running.splice(0));
});

/** Runs a launcher until the test ends (or it ends by itself). */
function launch(opts: Parameters<typeof runLauncher>[0], signal: AbortSignal): Promise<number> {
  const p = runLauncher(opts, signal);
  running.push(p);
  return p;
}

const exe = (counter: number, version: string): StagedExecutable => ({ id: `${counter}-${"ab".repeat(8)}`, name: "flotilla-agent", version, counter, sha256: "ab".repeat(32) });
const v2 = exe(2, "0.2.0");
const v3 = exe(3, "0.3.0");

describe("the launcher's state", () => {
  it("runs the installed executable until a handover, then the new one on probation, then the confirmed one", () => {
    let s: LauncherState = {};
    expect(toRun(s)).toBeUndefined();
    s = beginHandover(s, v2);
    expect(toRun(s)).toEqual(v2);
    expect(s.pending).toEqual({ to: v2 });
    s = confirmHandover(s, v2.id);
    expect(s).toEqual({ current: v2, last: { to: v2, outcome: "healthy" } });
    expect(toRun(s)).toEqual(v2);
  });

  it("restores what ran before a failed handover: the previous staged executable, or the installed one", () => {
    const onV2 = confirmHandover(beginHandover({}, v2), v2.id);
    expect(rollBackHandover(beginHandover(onV2, v3), "exited")).toEqual({ current: v2, last: { to: v3, outcome: "rolled-back", reason: "exited" } });
    expect(rollBackHandover(beginHandover({}, v3), "exited")).toEqual({ last: { to: v3, outcome: "rolled-back", reason: "exited" } });
  });

  it("treats a handover still pending at start as interrupted, and leaves any other state alone", () => {
    const onV2 = confirmHandover(beginHandover({}, v2), v2.id);
    expect(afterRestart(beginHandover(onV2, v3))).toEqual({ current: v2, last: { to: v3, outcome: "rolled-back", reason: "the agent was stopped during the handover to 0.3.0" } });
    expect(afterRestart(onV2)).toBe(onV2);
    expect(afterRestart({})).toEqual({});
  });

  it("refuses a second handover while one is pending, a handover to what runs, and a confirmation of anything else", () => {
    const pending = beginHandover({}, v2);
    expect(() => beginHandover(pending, v3)).toThrow("a handover to 0.2.0 is in progress");
    expect(() => beginHandover(confirmHandover(pending, v2.id), v2)).toThrow("0.2.0 runs already");
    expect(() => confirmHandover(pending, v3.id)).toThrow(`no handover to ${v3.id} is waiting for confirmation`);
    expect(() => confirmHandover({}, v2.id)).toThrow();
  });
});

describe("the launcher", () => {
  /** Stages `to` as a script running child.mjs in `mode`; returns the launcher's options and log reader. */
  async function setup(opts: { installedMode: string; stagedMode?: string; to?: StagedExecutable; confirmWindowMs?: number; env?: Record<string, string> }) {
    const stateDir = join(tmp.path, `s${Math.random().toString(36).slice(2, 8)}`);
    const logPath = join(stateDir, "test.log");
    await mkdir(stateDir, { recursive: true });
    await writeFile(logPath, "");
    const to = opts.to ?? v2;
    if (opts.stagedMode) {
      await mkdir(join(stateDir, "agent-versions", to.id), { recursive: true });
      await writeFile(executablePath(stateDir, to.id), `#!/bin/sh\nexec "${process.execPath}" "${CHILD}" ${opts.stagedMode}\n`, { mode: 0o755 });
    }
    const stop = new AbortController();
    stops.push(stop);
    const launcherOpts = {
      stateDir,
      installedCommand: [process.execPath, CHILD, opts.installedMode],
      args: [],
      env: { PATH: process.env.PATH, TEST_LOG: logPath, TEST_STATE: stateDir, TEST_TO: JSON.stringify(to), ...opts.env },
      confirmWindowMs: opts.confirmWindowMs ?? 30_000,
      stopGraceMs: 2000,
      log: silentLogger,
    };
    const lines = async () => (await readFile(logPath, "utf8")).split("\n").filter(Boolean);
    const state = async () => JSON.parse(await readFile(join(stateDir, "agent-versions", "launcher.json"), "utf8")) as LauncherState;
    const until = (what: string) => waitFor(`the log to show "${what}"`, async () => ((await lines()).includes(what) ? true : undefined), 20_000, 25);
    return { stateDir, launcherOpts, stop, lines, state, until };
  }

  it("runs the agent with a young generation of 1 MiB semi-spaces, after the NODE_OPTIONS it was given", async () => {
    const t = await setup({ installedMode: "young", env: { NODE_OPTIONS: "--no-warnings" } });
    void launch(t.launcherOpts, t.stop.signal);
    await waitFor("the agent's heap figures", async () => ((await t.lines()).some((l) => l.startsWith("installed NODE_OPTIONS")) ? true : undefined), 20_000, 25);
    const lines = await t.lines();
    // Two semi-spaces of 1 MiB; without the flag the burst grows them to 16 MiB each.
    expect(lines).toContain("installed young 2 MiB");
    expect(lines).toContain(`installed NODE_OPTIONS --no-warnings ${AGENT_NODE_OPTIONS}`);
  });

  it("gives back NODE_OPTIONS as it was before the launcher appended its flags", () => {
    expect(withoutAgentNodeOptions(`--no-warnings ${AGENT_NODE_OPTIONS}`)).toBe("--no-warnings");
    expect(withoutAgentNodeOptions(AGENT_NODE_OPTIONS)).toBeUndefined();
    expect(withoutAgentNodeOptions("--no-warnings")).toBe("--no-warnings");
    expect(withoutAgentNodeOptions(undefined)).toBeUndefined();
  });

  it("hands over to the staged executable, which becomes current once it confirms", async () => {
    const t = await setup({ installedMode: "switch-once", stagedMode: "confirm" });
    const done = launch(t.launcherOpts, t.stop.signal);
    await t.until(`${v2.id} confirm ok`);
    expect(await t.lines()).toEqual(["installed started switch-once", "installed switch ok", "installed stopped", `${v2.id} started confirm`, `${v2.id} confirm ok`]);
    expect(await t.state()).toEqual({ current: v2, last: { to: v2, outcome: "healthy" } });
    t.stop.abort();
    expect(await done).toBe(0);
    expect((await t.lines()).at(-1)).toBe(`${v2.id} stopped`);
  });

  it("restores the installed executable when the new one exits before confirming", async () => {
    const t = await setup({ installedMode: "switch-once", stagedMode: "exit" });
    void launch(t.launcherOpts, t.stop.signal);
    await waitFor("the installed agent again", async () => ((await t.lines()).filter((l) => l === "installed started switch-once").length === 2 ? true : undefined), 20_000, 25);
    expect(await t.state()).toEqual({ last: { to: v2, outcome: "rolled-back", reason: "the new agent 0.2.0 exited with code 3 before it reached the coordinator" } });
  });

  it("restores the previous executable when the new one does not confirm within the window", async () => {
    const t = await setup({ installedMode: "switch-once", stagedMode: "idle", confirmWindowMs: 300 });
    void launch(t.launcherOpts, t.stop.signal);
    await waitFor("the installed agent again", async () => ((await t.lines()).filter((l) => l === "installed started switch-once").length === 2 ? true : undefined), 20_000, 25);
    expect((await t.lines()).slice(3)).toEqual([`${v2.id} started idle`, `${v2.id} stopped`, "installed started switch-once"]);
    expect((await t.state()).last).toEqual({ to: v2, outcome: "rolled-back", reason: "the new agent 0.2.0 did not reach the coordinator within 300 ms" });
  });

  it("restores the previous executable when the new one cannot even be started", async () => {
    const t = await setup({ installedMode: "switch-once" });
    await mkdir(join(t.stateDir, "agent-versions", v2.id), { recursive: true });
    await writeFile(executablePath(t.stateDir, v2.id), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 0, 0]), { mode: 0o755 });
    void launch(t.launcherOpts, t.stop.signal);
    await waitFor("the installed agent again", async () => ((await t.lines()).filter((l) => l === "installed started switch-once").length === 2 ? true : undefined), 20_000, 25);
    expect((await t.state()).last).toMatchObject({ to: v2, outcome: "rolled-back", reason: "the new agent 0.2.0 exited with code 127 before it reached the coordinator" });
  });

  it("restores the previous executable at start when a handover was pending, and stops the agents a killed launcher left", async () => {
    const t = await setup({ installedMode: "idle", stagedMode: "confirm" });
    const dir = join(t.stateDir, "agent-versions");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "launcher.json"), JSON.stringify(beginHandover({}, v2)));
    // One recorded in child.json, one started but not recorded yet when its launcher was killed.
    const recorded = spawn("sleep", ["60"], { detached: true, stdio: "ignore" });
    await writePidRecord(join(dir, "child.json"), { pid: recorded.pid!, startTime: (await procStat(recorded.pid!))!.startTime, release: v2.id });
    const unrecorded = spawn("sleep", ["60"], { detached: true, stdio: "ignore", env: { PATH: process.env.PATH, [LAUNCHER_DIR_ENV]: dir } });
    const elsewhere = spawn("sleep", ["60"], { detached: true, stdio: "ignore", env: { PATH: process.env.PATH, [LAUNCHER_DIR_ENV]: `${dir}-other` } });
    try {
      void launch(t.launcherOpts, t.stop.signal);
      await t.until("installed started idle");
      expect(await groupAlive(recorded.pid!)).toBe(false);
      expect(await groupAlive(unrecorded.pid!)).toBe(false);
      expect(await groupAlive(elsewhere.pid!)).toBe(true);
      expect(await t.state()).toEqual({ last: { to: v2, outcome: "rolled-back", reason: "the agent was stopped during the handover to 0.2.0" } });
    } finally {
      elsewhere.kill("SIGKILL");
    }
  });

  it("refuses a handover to an id that is not a staged executable's, such as a path out of its directory", async () => {
    const t = await setup({ installedMode: "switch-once", to: { ...v2, id: "../../../bin" } });
    void launch(t.launcherOpts, t.stop.signal);
    await t.until("installed switch invalid staged executable id");
    const missing = await setup({ installedMode: "switch-once" });
    void launch(missing.launcherOpts, missing.stop.signal);
    await waitFor("a refusal", async () => ((await missing.lines()).some((l) => l.startsWith("installed switch ENOENT")) ? true : undefined), 20_000, 25);
  });

  it("ends with the agent's exit code when an agent that is not on probation exits", async () => {
    const t = await setup({ installedMode: "quit" });
    expect(await launch(t.launcherOpts, t.stop.signal)).toBe(0);
    const failing = await setup({ installedMode: "exit" });
    expect(await launch(failing.launcherOpts, failing.stop.signal)).toBe(3);
  });
});
