/**
 * Agent footprint: the resident memory of an idle `flotilla agent` (enrolled, connected to a
 * real coordinator, then left idle for a window), beside a bare `node` process that only waits
 * (the floor any Node program starts from), measured in the same run. Also lists the native
 * addons the agent process has mapped: the agent role loads none of the coordinator's
 * (better-sqlite3).
 *
 * Runs the built bundle (packages/cli/dist), as an installed `flotilla` does: run `npm run build`
 * first (bin/flotilla.js falls back to compiling the sources through tsx when the bundle is
 * stale, and then the figure would be tsx's, not the agent's).
 *
 *   npm run bench -- agent
 *   BENCH_AGENT_IDLE_S=30     # idle window before RSS is read (default 30 s)
 */
import { spawn } from "node:child_process";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { waitFor } from "@flotilla/protocol/testing";
import { Fleet } from "../test/e2e/support/fleet.ts";
import { repoRoot, Sandbox } from "../test/e2e/support/sandbox.ts";

const IDLE_S = Number(process.env.BENCH_AGENT_IDLE_S ?? 30);

/** Resident memory (MiB) and its peak, from /proc. */
export async function memoryOf(pid: number): Promise<{ rssMiB: number; hwmMiB: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024;
  return { rssMiB: kb("VmRSS"), hwmMiB: kb("VmHWM") };
}

/** Whether the `flotilla` bundle is newer than every source file (else bin/flotilla.js runs tsx). */
async function bundleFresh(): Promise<boolean> {
  const { execFileSync } = await import("node:child_process");
  const built = await stat(join(repoRoot, "packages/cli/dist/flotilla.mjs")).then((s) => s.mtimeMs, () => 0);
  const newest = Number(execFileSync("sh", ["-c", "find packages/*/src -name '*.ts' -printf '%T@\\n' | sort -n | tail -1"], { cwd: repoRoot, encoding: "utf8" }).trim()) * 1000;
  return built >= newest;
}

/** Native addons the agent must not load (the coordinator's database) and tsx's compiler. */
const WATCHED = ["better_sqlite3.node", "esbuild"];

/** Which WATCHED names appear among the files the process has mapped. */
async function loadedHeavy(pid: number): Promise<string[]> {
  const maps = await readFile(`/proc/${pid}/maps`, "utf8").catch(() => "");
  return WATCHED.filter((w) => maps.includes(w));
}

export interface AgentFootprint {
  idleSeconds: number;
  agent: { rssMiB: number; hwmMiB: number; mapped: string[] };
  bareNode: { rssMiB: number };
  /** agent RSS / bare node RSS */
  ratio: number;
}

/** Starts a coordinator and one agent, waits until it is online, lets it idle, reads its RSS. */
export async function measureAgentFootprint(log: (line: string) => void): Promise<AgentFootprint> {
  if (!(await bundleFresh())) log("  warning: packages/cli/dist is older than the sources: `npm run build` first, or this measures tsx compiling them");
  const sb = new Sandbox();
  try {
    const fleet = await new Fleet(sb, ["--keepalive-ms", "15000", "--offline-after-ms", "45000"]).start();
    const join = await fleet.joinToken(["--auto-approve"]);
    const stateDir = await sb.dir("flotilla-agent-");
    // Production timings: no test flags.
    const agent = sb.spawn(["agent", "--state-dir", stateDir, "--join", join], {}, "agent");
    await waitFor("the agent online", async () => (await fleet.devices()).some((d) => d.status === "online"), 60_000, 250);
    const bare = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
    sb.adopt(bare, "bare node");
    log(`  agent online; idle for ${IDLE_S} s`);
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const a = await memoryOf(agent.child.pid!);
    const mapped = await loadedHeavy(agent.child.pid!);
    const b = await memoryOf(bare.pid!);
    if ((await fleet.devices())[0]?.status !== "online") throw new Error("the agent went offline during the idle window");
    return { idleSeconds: IDLE_S, agent: { ...a, mapped }, bareNode: { rssMiB: b.rssMiB }, ratio: a.rssMiB / b.rssMiB };
  } finally {
    await sb.cleanup();
  }
}

export async function benchAgent(print: (line: string) => void): Promise<void> {
  print("agent footprint: idle `flotilla agent` (enrolled, connected, production timings) beside a bare node process");
  const r = await measureAgentFootprint(print);
  print(`  idle agent RSS        ${r.agent.rssMiB.toFixed(1)} MiB (peak ${r.agent.hwmMiB.toFixed(1)} MiB)`);
  print(`  bare node RSS         ${r.bareNode.rssMiB.toFixed(1)} MiB`);
  print(`  agent / bare node     ${r.ratio.toFixed(2)}`);
  print(`  native addons mapped  ${r.agent.mapped.length ? r.agent.mapped.join(", ") : "none"}`);
  const dir = join(repoRoot, "bench", "results");
  await mkdir(dir, { recursive: true });
  const file = join(dir, `agent-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  await writeFile(file, JSON.stringify({ date: new Date().toISOString(), ...r }, null, 2) + "\n");
  print(`  written to ${file}`);
}

// Runnable on its own as well: `npx tsx bench/agent.ts`.
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await benchAgent((line) => process.stdout.write(`${line}\n`));
