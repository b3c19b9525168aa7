import { appendFile, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor, type Proc } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const journald = await stat("/run/systemd/journal/socket").then(() => true, () => false);

const sb = useSandbox();

interface JsonLine {
  device: string;
  time: string;
  unit: string;
  source: string;
  seq: number;
  line: string;
}

/** A fleet with one auto-approved agent that follows `app.log` into the unit "app". */
async function fleetWithAgent(opts: { coordinatorArgs?: string[]; agentArgs?: string[] } = {}) {
  const fleet = await new Fleet(sb, opts.coordinatorArgs).start();
  const stateDir = await sb.dir("flotilla-agent-");
  const appLog = join(await sb.dir("flotilla-app-"), "app.log");
  await writeFile(appLog, "");
  const agentArgs = ["--log-file-unit", `app=${appLog}`, "--metrics-interval-ms", "500", ...(opts.agentArgs ?? [])];
  const join_ = await fleet.joinToken(["--auto-approve", "--labels", "site=lab"]);
  let agent = fleet.startAgent(stateDir, join_, agentArgs);
  const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
  return {
    fleet,
    stateDir,
    appLog,
    device,
    get agent(): Proc {
      return agent;
    },
    restartAgent() {
      agent = fleet.startAgent(stateDir, undefined, agentArgs);
      return agent;
    },
    async logs(args: string[]): Promise<JsonLine[]> {
      const r = await fleet.admin(["logs", ...args, "--json"]);
      if (r.code !== 0) throw new Error(`flotilla logs failed (${r.code}): ${r.stderr}`);
      return r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as JsonLine);
    },
  };
}

import { numbered } from "./support/faults.ts";

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const f of await readdir(dir).catch(() => [])) if (f.startsWith("seg-")) total += (await stat(join(dir, f)).catch(() => ({ size: 0 }))).size;
  return total;
}

describe("device logs", () => {
  it("delivers every line exactly once and in order after the coordinator was down and the agent was killed with SIGKILL", async () => {
    const t = await fleetWithAgent();
    const N = 3000;
    await t.fleet.coordinator.stop();
    await appendFile(t.appLog, numbered(1, N / 2));
    // Kill the agent once it has buffered part of the lines, while the coordinator is still down.
    await waitFor("the agent to buffer lines", async () => (await dirBytes(join(t.stateDir, "logs"))) > 20_000);
    await t.agent.stop("SIGKILL");
    await appendFile(t.appLog, numbered(N / 2 + 1, N / 4));
    t.restartAgent();
    await appendFile(t.appLog, numbered((3 * N) / 4 + 1, N / 4));
    await t.fleet.startCoordinator();

    const lines = await waitFor(
      "every line at the coordinator",
      async () => {
        const got = await t.logs([t.device.name, "--unit", "app", "-n", "10000"]);
        return got.length >= N ? got : undefined;
      },
      60_000,
      500,
    );
    expect(lines.map((l) => l.line)).toEqual(numbered(1, N).trimEnd().split("\n"));
    const seqs = lines.map((l) => l.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(N);

    // --since prints every matching line, page by page, not only the newest 1000.
    const since = await t.logs([t.device.name, "--unit", "app", "--since", "1h"]);
    expect(since.map((l) => l.line)).toEqual(numbered(1, N).trimEnd().split("\n"));
    // Without it, the newest 1000, and stderr says that older lines were left out and how to get them.
    const newest = await t.fleet.admin(["logs", t.device.name, "--unit", "app"]);
    expect(newest.stdout.trimEnd().split("\n")).toHaveLength(1000);
    expect(newest.stdout).toMatch(/app\[[^\]]*\]: line 03000\n$/);
    expect(newest.stderr).toMatch(/^flotilla: showing the newest 1000 matching lines; older ones match too: --since DURATION prints every line since then, -n 10000 more of the newest\n$/);
    const all = await t.fleet.admin(["logs", t.device.name, "--unit", "app", "-n", "10000"]);
    expect(all.stderr).toBe("");
  }, 120_000);

  it("holds the buffer's size bound while offline and reports exactly how many records it dropped", async () => {
    const bound = 64 * 1024;
    const t = await fleetWithAgent({ agentArgs: ["--log-buffer-bytes", String(bound)] });
    await t.fleet.coordinator.stop();
    const N = 5000;
    let largest = 0;
    for (let i = 1; i <= N; i += 500) {
      await appendFile(t.appLog, numbered(i, 500).replace(/\n/g, ` ${"x".repeat(80)}\n`));
      largest = Math.max(largest, await dirBytes(join(t.stateDir, "logs")));
    }
    await t.fleet.startCoordinator();
    const last = `line ${String(N).padStart(5, "0")}`;
    await waitFor("the last line at the coordinator", async () => (await t.logs([t.device.name, "--unit", "app", "-n", "1"]))[0]?.line.startsWith(last), 60_000, 500);
    largest = Math.max(largest, await dirBytes(join(t.stateDir, "logs")));
    expect(largest).toBeGreaterThan(0);
    expect(largest).toBeLessThanOrEqual(bound);

    const metrics = await t.fleet.adminJson<{ logsDropped: number }>(["metrics", t.device.name]);
    const stored = await t.logs([t.device.name, "-n", "10000"]);
    const maxSeq = Math.max(...stored.map((l) => l.seq));
    // Every seq up to the highest is either stored or counted as dropped, and nothing else.
    expect(metrics.logsDropped).toBeGreaterThan(0);
    expect(new Set(stored.map((l) => l.seq)).size).toBe(stored.length);
    expect(stored.length + metrics.logsDropped).toBe(maxSeq);
    const app = stored.filter((l) => l.unit === "app").map((l) => Number(/line (\d+)/.exec(l.line)![1]));
    expect(app.at(-1)).toBe(N);
    expect(app).toEqual(Array.from({ length: app.length }, (_, i) => N - app.length + 1 + i));
  }, 120_000);

  it("shows a line in `logs -f` within a second of the process writing it", async () => {
    const t = await fleetWithAgent();
    await appendFile(t.appLog, "ready\n");
    await waitFor("the first line stored", async () => (await t.logs([t.device.name, "--unit", "app"])).length > 0);
    const follow = sb.spawn(["--coordinator", t.fleet.url, "logs", t.device.name, "--unit", "app", "-f", "-n", "1"], { FLOTILLA_HOME: t.fleet.adminHome }, "logs -f");
    await follow.waitForOutput(/app\[file\]: ready/);
    const marker = `hello ${Math.random().toString(36).slice(2)}`;
    const written = Date.now();
    await appendFile(t.appLog, `${marker}\n`);
    await waitFor("the line in logs -f", () => follow.stdout.includes(marker), 10_000, 5);
    const latency = Date.now() - written;
    expect(latency).toBeLessThan(1000);
    await follow.stop("SIGINT");
    expect(follow.exitCode).toBe(0);
  }, 60_000);

  it("captures the agent's own log, and prefixes lines with the device name for a selector", async () => {
    const t = await fleetWithAgent();
    const own = await waitFor("the agent's own log", async () => (await t.logs([t.device.name, "--unit", "flotilla-agent", "--grep", "agent running"]))[0]);
    expect(own.source).toBe("stderr");
    const r = await t.fleet.admin(["logs", "--selector", "site=lab", "--unit", "flotilla-agent", "--grep", "AGENT RUNNING"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${t.device.name} \\| \\S+ flotilla-agent\\[stderr\\]: info agent running`, "m"));
    const none = await t.fleet.admin(["logs", "--selector", "site=elsewhere"]);
    expect(none.code).toBe(0);
    expect(none.stdout).toBe("");
    const bad = await t.fleet.admin(["logs", "--selector", "site in ("]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: /);
  }, 60_000);

  it("keeps an organization's lines while another organization's device floods past the size bound", async () => {
    // 1 MiB per organization; a retention age of 5 minutes makes the sweep run every 30 seconds.
    const fleet = await new Fleet(sb, ["--log-retention-bytes", String(1 << 20), "--log-retention-ms", "300000"]).start();
    expect((await fleet.admin(["org", "create", "globex"])).code).toBe(0);
    const quiet = join(await sb.dir("flotilla-app-"), "quiet.log");
    const loud = join(await sb.dir("flotilla-app-"), "loud.log");
    await writeFile(quiet, "");
    await writeFile(loud, "");
    const globexJoin = await fleet.admin(["--org", "globex", "join-token", "create", "--auto-approve"]);
    expect(globexJoin.code).toBe(0);
    fleet.startAgent(await sb.dir("flotilla-agent-"), globexJoin.stdout.trim().split("\n").pop(), ["--log-file-unit", `app=${quiet}`], "globex agent");
    fleet.startAgent(await sb.dir("flotilla-agent-"), await fleet.joinToken(["--auto-approve"]), ["--log-file-unit", `app=${loud}`], "loud agent");
    const logs = async (org?: string): Promise<JsonLine[]> => {
      const r = await fleet.admin([...(org ? ["--org", org] : []), "logs", "--unit", "app", "-n", "10000", "--json"]);
      if (r.code !== 0) throw new Error(`flotilla logs failed (${r.code}): ${r.stderr}`);
      return r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as JsonLine);
    };

    // globex's device logs ten lines first: under a fleet-wide bound they would be the oldest.
    await appendFile(quiet, numbered(1, 10));
    await waitFor("globex's lines stored", async () => (await logs("globex")).length === 10, 30_000, 250);
    // The default organization's device then logs about 2 MiB, twice its bound.
    const N = 2000;
    await appendFile(loud, numbered(1, N).replace(/\n/g, ` ${"x".repeat(1000)}\n`));
    await waitFor("the flood stored", async () => (await logs()).some((l) => l.line.startsWith(`line ${String(N).padStart(5, "0")}`)), 60_000, 500);
    // The sweep cuts the flooding organization to 90% of its bound, earliest received first...
    const kept = await waitFor("the flood cut to its bound", async () => {
      const lines = await logs();
      return lines.length < 900 ? lines : undefined;
    }, 90_000, 1000);
    expect(kept.length).toBeGreaterThan(500);
    expect(kept.at(-1)!.line).toMatch(new RegExp(`^line ${String(N).padStart(5, "0")} `));
    // ...and leaves the other organization's lines alone.
    expect((await logs("globex")).map((l) => l.line)).toEqual(numbered(1, 10).trimEnd().split("\n"));
  }, 180_000);

  // Without a running journald (containers, CI runners) there is no journal to capture from.
  it.skipIf(!journald)("captures a systemd unit's journal lines (needs journald running)", async () => {
    const unit = `flotilla-test-${Math.random().toString(36).slice(2, 8)}`;
    const t = await fleetWithAgent({ agentArgs: ["--journal-units", `${unit}.service`] });
    const { execFileSync } = await import("node:child_process");
    execFileSync("systemd-run", ["--unit", unit, "--wait", "echo", "hello from the journal"]);
    await waitFor("the journal line", async () => (await t.logs([t.device.name, "--unit", `${unit}.service`])).some((l) => l.line.includes("hello from the journal")));
  });
});
