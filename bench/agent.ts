/**
 * Agent footprint: the resident memory of an idle `flotilla agent` (enrolled, connected to a
 * real coordinator, then left idle for a window), beside two baselines measured in the same run:
 * a bare `node` process that only waits (the floor any Node program starts from) and a `node`
 * process that holds an HTTP/2 TLS connection to the same coordinator and pings it (the floor of
 * any Node program that keeps a connection, as the agent does). Two agents run side by side:
 * `flotilla agent` on its own without V8 flags, and the installed form (`--self-update true` and
 * NODE_OPTIONS=AGENT_NODE_OPTIONS, as the systemd unit that install.sh and the .deb install starts
 * it), a launcher process and the agent it runs, measured each and together; CPU time beside it
 * shows what the flags cost. When the single executable that `npm run package` builds for this
 * machine is in dist/ (or BENCH_AGENT_EXECUTABLE names one), it runs installed as well, as the
 * .deb's and install.sh's unit starts it: that is the agent most machines run.
 * RSS includes the pages of the node executable itself (shared by every node process, "file"
 * below); "private" is the process's own anonymous memory (RssAnon), what one more process
 * costs. Also lists the native addons the agent processes have mapped: the agent role loads none
 * of the coordinator's (better-sqlite3).
 *
 * Runs the built bundle (packages/cli/dist), as an installed `flotilla` does: run `npm run build`
 * first (bin/flotilla.js falls back to compiling the sources through tsx when the bundle is
 * stale, and then the figure would be tsx's, not the agent's).
 *
 *   npm run bench -- agent
 *   BENCH_AGENT_IDLE_S=30     # idle window before RSS is read (default 60 s)
 *   BENCH_AGENT_EXECUTABLE=dist/flotilla-0.1.0-linux-x86_64   # the single executable to measure
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { AGENT_NODE_OPTIONS } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { Fleet } from "../test/e2e/support/fleet.ts";
import { repoRoot, Sandbox } from "../test/e2e/support/sandbox.ts";
import { writeResult } from "./results.ts";

const IDLE_S = Number(process.env.BENCH_AGENT_IDLE_S ?? 60);

/** The single executable for this machine that `npm run package` writes to dist/, if built. */
async function singleExecutable(): Promise<string | undefined> {
  if (process.env.BENCH_AGENT_EXECUTABLE) return process.env.BENCH_AGENT_EXECUTABLE;
  const version = (JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as { version: string }).version;
  const file = join(repoRoot, "dist", `flotilla-${version}-linux-${process.arch === "arm64" ? "aarch64" : "x86_64"}`);
  return existsSync(file) ? file : undefined;
}

/** Resident memory (MiB): total, its peak, and the process's own anonymous part, from /proc. */
export async function memoryOf(pid: number): Promise<Memory> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024;
  // utime and stime, fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 a second on Linux).
  const stat = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  const cpuS = (Number(stat[11]) + Number(stat[12])) / 100;
  return { rssMiB: kb("VmRSS"), hwmMiB: kb("VmHWM"), privateMiB: kb("RssAnon"), cpuS };
}

export interface Memory {
  rssMiB: number;
  hwmMiB: number;
  /** RssAnon: not shared with other node processes, unlike the node executable's pages */
  privateMiB: number;
  /** CPU time (user + system) since the process started, start-up and enrollment included */
  cpuS: number;
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

/** The child processes of `pid` (Linux: /proc/<pid>/task/<pid>/children). */
async function childrenOf(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
  return text.split(/\s+/).filter(Boolean).map(Number);
}

/** The baseline that keeps a connection: HTTP/2 over TLS to the coordinator, a PING every 15 s. */
const HTTP2_BASELINE = `
const http2 = require("node:http2");
const s = http2.connect(process.argv[1], { rejectUnauthorized: false });
s.on("error", (e) => { console.error(e.message); process.exit(1); });
s.on("connect", () => console.log("connected"));
setInterval(() => s.ping(() => {}), 15000);
`;

export interface AgentFootprint {
  idleSeconds: number;
  agent: Memory & { mapped: string[] };
  /** `--self-update true`: the launcher and the agent it runs */
  installed: Installed;
  /** The single executable (dist/), installed in the same way; absent when not built */
  executable?: Installed & { file: string };
  bareNode: Memory;
  http2Node: Memory;
  /** agent RSS / RSS of node holding an HTTP/2 connection */
  ratio: number;
}

export interface Installed {
  launcher: Memory;
  agent: Memory;
  mapped: string[];
  totalRssMiB: number;
  totalPrivateMiB: number;
}

/** The launcher's and its agent's memory. */
async function installedMemory(launcherPid: number): Promise<Installed> {
  const launched = await childrenOf(launcherPid);
  if (launched.length !== 1) throw new Error(`the launcher runs ${launched.length} processes, not one agent`);
  const launcher = await memoryOf(launcherPid);
  const agent = await memoryOf(launched[0]!);
  const mapped = [...new Set([...(await loadedHeavy(launcherPid)), ...(await loadedHeavy(launched[0]!))])];
  return { launcher, agent, mapped, totalRssMiB: launcher.rssMiB + agent.rssMiB, totalPrivateMiB: launcher.privateMiB + agent.privateMiB };
}

/** Starts a coordinator and two agents (three with the single executable), waits until all are online, lets them idle, reads their memory. */
export async function measureAgentFootprint(log: (line: string) => void): Promise<AgentFootprint> {
  if (!(await bundleFresh())) log("  warning: packages/cli/dist is older than the sources: `npm run build` first, or this measures tsx compiling them");
  const sb = new Sandbox();
  try {
    const fleet = await new Fleet(sb, ["--keepalive-ms", "15000", "--offline-after-ms", "45000"]).start();
    // Production timings: no test flags.
    const agent = sb.spawn(["agent", "--state-dir", await sb.dir("flotilla-agent-"), "--join", await fleet.joinToken(["--auto-approve"])], {}, "agent");
    const launcher = sb.spawn(
      ["agent", "--self-update", "true", "--state-dir", await sb.dir("flotilla-agent-"), "--join", await fleet.joinToken(["--auto-approve"])],
      // As the agent's systemd unit starts it (packages/coordinator/src/install/units.ts).
      { NODE_OPTIONS: AGENT_NODE_OPTIONS },
      "agent --self-update",
    );
    const exe = await singleExecutable();
    if (!exe) log("  (no single executable in dist/: `npm run package -- --arch x86_64 --skip-deb` first to measure it too)");
    const exeLauncher = exe
      ? sb.adopt(
          spawn(exe, ["agent", "--self-update", "true", "--state-dir", await sb.dir("flotilla-agent-"), "--join", await fleet.joinToken(["--auto-approve"])], {
            env: { ...process.env, NODE_OPTIONS: AGENT_NODE_OPTIONS },
            stdio: ["ignore", "pipe", "pipe"],
          }),
          "single executable agent --self-update",
        )
      : undefined;
    const agents = exe ? 3 : 2;
    await waitFor("the agents online", async () => (await fleet.devices()).filter((d) => d.status === "online").length === agents, 90_000, 250);
    const bare = sb.adopt(spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" }), "bare node");
    const h2 = sb.adopt(spawn(process.execPath, ["-e", HTTP2_BASELINE, fleet.url], { stdio: ["ignore", "pipe", "pipe"] }), "node + HTTP/2");
    await h2.waitForOutput(/connected/);
    log(`  agents online; idle for ${IDLE_S} s`);
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const a = await memoryOf(agent.child.pid!);
    const mapped = await loadedHeavy(agent.child.pid!);
    const installed = await installedMemory(launcher.child.pid!);
    const executable = exe && exeLauncher ? { file: exe, ...(await installedMemory(exeLauncher.child.pid!)) } : undefined;
    const b = await memoryOf(bare.child.pid!);
    const h = await memoryOf(h2.child.pid!);
    if ((await fleet.devices()).some((d) => d.status !== "online")) throw new Error("an agent went offline during the idle window");
    return {
      idleSeconds: IDLE_S,
      agent: { ...a, mapped },
      installed,
      executable,
      bareNode: b,
      http2Node: h,
      ratio: a.rssMiB / h.rssMiB,
    };
  } finally {
    await sb.cleanup();
  }
}

export async function benchAgent(print: (line: string) => void): Promise<void> {
  print("agent footprint: idle `flotilla agent` (enrolled, connected, production timings) beside node baselines");
  const r = await measureAgentFootprint(print);
  const row = (name: string, m: Memory) =>
    print(`  ${name.padEnd(50)} RSS ${m.rssMiB.toFixed(1).padStart(5)} MiB  private ${m.privateMiB.toFixed(1).padStart(5)} MiB  peak RSS ${m.hwmMiB.toFixed(1).padStart(5)} MiB  CPU ${m.cpuS.toFixed(2)} s`);
  row("idle agent (flotilla agent, no NODE_OPTIONS)", r.agent);
  row(`installed: launcher (${AGENT_NODE_OPTIONS})`, r.installed.launcher);
  row(`installed: agent it runs (${AGENT_NODE_OPTIONS})`, r.installed.agent);
  print(`  ${"installed: both".padEnd(50)} RSS ${r.installed.totalRssMiB.toFixed(1).padStart(5)} MiB  private ${r.installed.totalPrivateMiB.toFixed(1).padStart(5)} MiB`);
  if (r.executable) {
    row("single executable: launcher", r.executable.launcher);
    row("single executable: agent it runs", r.executable.agent);
    print(`  ${"single executable: both".padEnd(50)} RSS ${r.executable.totalRssMiB.toFixed(1).padStart(5)} MiB  private ${r.executable.totalPrivateMiB.toFixed(1).padStart(5)} MiB`);
  }
  row("baseline: bare node", r.bareNode);
  row("baseline: node + HTTP/2 connection", r.http2Node);
  print(`  agent / node + HTTP/2 (RSS)                        ${r.ratio.toFixed(2)}`);
  print(`  native addons mapped                               ${[...new Set([...r.agent.mapped, ...r.installed.mapped, ...(r.executable?.mapped ?? [])])].join(", ") || "none"}`);
  const file = await writeResult("agent", { ...r });
  print(`  written to ${file}`);
}

// Runnable on its own as well: `npx tsx bench/agent.ts`.
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await benchAgent((line) => process.stdout.write(`${line}\n`));
