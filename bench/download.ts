/**
 * Artifact download: MB/s of the agent's own release download (TUF verification, then the
 * streaming download that hashes while it writes, fsync, length and sha256 check; the code
 * production runs: verifyRelease and downloadTarget) from a real coordinator process, beside
 * `curl` writing the same file to disk followed by an fsync of it (`curl -o f URL && sync f`),
 * with the device's own session token, measured in the same run on the same machine:
 *
 *   (a) one download of a large artifact (default 300 MB of random bytes);
 *   (b) N downloads at once (default 50) of a smaller artifact (default 20 MB each): N agent
 *       processes, N curl processes for the baseline.
 *
 * The agent's side runs in processes of their own with the agent's V8 flags
 * (bench/download-agent.ts), started before the clock; its CPU time is theirs.
 *
 * Each figure is the median of a few rounds, agent and curl alternating. By default the
 * coordinator listens on a non-loopback address, so the bytes travel over TLS as they do in
 * production (loopback listeners are plain HTTP); `--plain` measures over loopback instead.
 * Printed as a table of ratios and written as JSON (bench/results/). Asserts nothing.
 *
 *   npm run bench -- download
 *   npm run bench -- download --size-mb 100 --concurrent 20 --concurrent-size-mb 10 --rounds 3 --plain
 *   (or BENCH_DOWNLOAD_SIZE_MB, BENCH_DOWNLOAD_CONCURRENT, BENCH_DOWNLOAD_CONCURRENT_SIZE_MB, BENCH_DOWNLOAD_ROUNDS)
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { connect, targetUrlPath } from "@flotilla/agent/testing";
import { AGENT_NODE_OPTIONS, loadIdentity } from "@flotilla/protocol";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { Fleet } from "../test/e2e/support/fleet.ts";
import { createRelease } from "../test/e2e/support/releases.ts";
import type { DownloadDone, DownloadJob } from "./download-agent.ts";
import { LineChild } from "./line-child.ts";
import { Sandbox } from "../test/e2e/support/sandbox.ts";
import { writeResult } from "./results.ts";

/** A numeric setting from `--name N` (or `--name=N`), else the environment variable, else `fallback`. */
function setting(name: string, envName: string, fallback: number, argv = process.argv.slice(2)): number {
  const i = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  const text = i < 0 ? process.env[envName] : argv[i]!.includes("=") ? argv[i]!.split("=")[1] : argv[i + 1];
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`invalid --${name} ${JSON.stringify(text)}: expected a positive number`);
  return n;
}

const MB = 1_000_000;

interface Runs {
  agent: number[];
  curl: number[];
  curlHttp1: number[];
  /** CPU seconds per GB: the agent processes while they download, the curl processes (and their sync) */
  agentCpu: number[];
  /** The part of agentCpu spent verifying the release (TUF metadata) before downloading it */
  agentVerifyCpu: number[];
  curlCpu: number[];
  curlHttp1Cpu: number[];
}
const emptyRuns = (): Runs => ({ agent: [], curl: [], curlHttp1: [], agentCpu: [], agentVerifyCpu: [], curlCpu: [], curlHttp1Cpu: [] });

const CLK_TCK = 100; // Linux USER_HZ

/** CPU seconds of this process's children that have exited and been waited for (cutime + cstime). */
async function childrenCpuSeconds(): Promise<number> {
  const stat = await readFile("/proc/self/stat", "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[13]) + Number(f[14])) / CLK_TCK;
}

/** Medians in MB/s; the baseline is the faster of curl's two protocols. */
export interface DownloadFigures {
  downloads: number;
  bytesEach: number;
  agentMBps: number;
  curlMBps: number;
  curlHttp1MBps: number;
  /** agent / the faster curl */
  ratio: number;
  /** CPU seconds per GB downloaded (medians): a figure a loaded machine changes less than MB/s. */
  agentCpuPerGB: number;
  /** Of agentCpuPerGB, the TUF verification before the download (absent in results before 2026-12-03 evening) */
  agentVerifyCpuPerGB?: number;
  curlCpuPerGB: number;
  curlHttp1CpuPerGB: number;
  runs: Runs;
}

export interface DownloadResult {
  transport: string;
  /** The protocol curl negotiated by default (HTTP/2 over TLS); the agent speaks HTTP/1.1. */
  curlHttpVersion: string;
  rounds: number;
  single: DownloadFigures;
  concurrent: DownloadFigures;
}

function summary(runs: Runs, what: { downloads: number; bytesEach: number }): DownloadFigures {
  const agentMBps = median(runs.agent);
  const curlMBps = median(runs.curl);
  const curlHttp1MBps = median(runs.curlHttp1);
  return {
    ...what,
    agentMBps,
    curlMBps,
    curlHttp1MBps,
    ratio: agentMBps / Math.max(curlMBps, curlHttp1MBps),
    agentCpuPerGB: median(runs.agentCpu),
    agentVerifyCpuPerGB: median(runs.agentVerifyCpu),
    curlCpuPerGB: median(runs.curlCpu),
    curlHttp1CpuPerGB: median(runs.curlHttp1Cpu),
    runs,
  };
}

/** A non-loopback IPv4 address of this machine, for a TLS listener. */
function externalAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

/** Writes `bytes` random bytes to `path` without holding them all in memory; returns their sha256. */
async function randomFile(path: string, bytes: number): Promise<string> {
  const h = createHash("sha256");
  const out = createWriteStream(path);
  for (let left = bytes; left > 0; ) {
    const chunk = randomBytes(Math.min(left, 4 * 1024 * 1024));
    h.update(chunk);
    left -= chunk.length;
    if (!out.write(chunk)) await new Promise<void>((r) => out.once("drain", () => r()));
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return h.digest("hex");
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Runs `curl` (then `sync FILE`, an fsync of it) for each file at once; resolves with the seconds all took. */
async function curlAll(url: string, token: string, files: string[], http1: boolean): Promise<{ seconds: number; httpVersion: string }> {
  const t0 = performance.now();
  const versions = await Promise.all(
    files.map(
      (f) =>
        new Promise<string>((resolve, reject) => {
          const script = `curl${http1 ? " --http1.1" : ""} -sS -k --fail -H "authorization: Bearer $TOKEN" -o "$FILE" -w "%{http_version}" "$URL" && sync "$FILE"`;
          const p = spawn("sh", ["-c", script], { env: { ...process.env, TOKEN: token, FILE: f, URL: url }, stdio: ["ignore", "pipe", "pipe"] });
          let out = "";
          let err = "";
          p.stdout.on("data", (d: Buffer) => (out += d.toString()));
          p.stderr.on("data", (d: Buffer) => (err += d.toString()));
          p.on("error", reject);
          p.on("exit", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`curl exited ${code}: ${err.trim()}`))));
        }),
    ),
  );
  return { seconds: (performance.now() - t0) / 1000, httpVersion: versions[0] ?? "" };
}

/**
 * An agent's side in a process of its own (bench/download-agent.ts), with the agent's NODE_OPTIONS
 * on its command line (BENCH_DOWNLOAD_AGENT_FLAGS replaces them) and its V8 flags set as the agent
 * sets them, as an installed agent runs: its CPU time is its own, not the benchmark's (whose heap holds
 * the sandbox's output), and N downloads at once are N processes, as N devices are.
 */
class AgentProcess {
  private readonly child: LineChild;

  constructor() {
    const flags = process.env.BENCH_DOWNLOAD_AGENT_FLAGS ?? AGENT_NODE_OPTIONS;
    this.child = new LineChild("download-agent.ts", [], flags.split(" ").filter(Boolean));
  }

  async ready(): Promise<void> {
    const line = await this.child.next();
    if (line !== "ready") throw new Error(`the benchmark's agent process said ${JSON.stringify(line)}`);
  }

  /** Runs one download; resolves with the CPU seconds the process spent on it, and on verifying it. */
  async fetch(job: DownloadJob): Promise<{ cpuS: number; verifyCpuS: number }> {
    this.child.send(job);
    const done = JSON.parse(await this.child.next()) as DownloadDone;
    if (done.error !== undefined) throw new Error(`the agent's download failed: ${done.error}`);
    return { cpuS: done.cpuS!, verifyCpuS: done.verifyCpuS! };
  }

  close(): Promise<void> {
    return this.child.close();
  }
}

export async function measureDownloads(log: (line: string) => void): Promise<DownloadResult> {
  const sizeMB = setting("size-mb", "BENCH_DOWNLOAD_SIZE_MB", 300);
  const n = Math.round(setting("concurrent", "BENCH_DOWNLOAD_CONCURRENT", 50));
  const eachMB = setting("concurrent-size-mb", "BENCH_DOWNLOAD_CONCURRENT_SIZE_MB", 20);
  const rounds = Math.round(setting("rounds", "BENCH_DOWNLOAD_ROUNDS", 3));
  const plain = process.argv.includes("--plain");
  const sb = new Sandbox();
  try {
    const host = plain ? undefined : externalAddress();
    if (!plain && !host) log("  no non-loopback address: measuring over loopback (plain HTTP)");
    const listen = host ? ["--listen", `${host}:${await freePort()}`] : [];
    const fleet = await new Fleet(sb, ["--keepalive-ms", "15000", "--offline-after-ms", "45000", ...listen]).start();
    const signed = await fleet.admin(["signing-key", "add"]);
    if (signed.code !== 0) throw new Error(`signing-key add failed: ${signed.stderr}`);

    // Two releases: a large artifact for one download, a smaller one for many at once.
    const work = await sb.dir("flotilla-bench-dl-");
    const releases: Record<string, { length: number; sha256: string; targetPath: string }> = {};
    for (const [name, bytes] of [["big", Math.round(sizeMB * MB)], ["small", Math.round(eachMB * MB)]] as const) {
      const file = join(work, `${name}.bin`);
      const sha256 = await randomFile(file, bytes);
      await createRelease(fleet, file, name, "1.0.0");
      await rm(file);
      const list = await fleet.adminJson<{ version: string; targetPath: string }[]>(["release", "ls", "--name", name]);
      releases[name] = { length: bytes, sha256, targetPath: list[0]!.targetPath };
    }

    // A real agent enrolls (and is stopped: nothing is deployed to it); its key opens the session whose token both sides use.
    const stateDir = await sb.dir("flotilla-agent-");
    const agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]));
    await waitFor("the agent online", async () => (await fleet.devices()).some((d) => d.status === "online"), 60_000, 250);
    await agent.stop("SIGTERM");
    const enrollment = JSON.parse(await readFile(join(stateDir, "enrollment.json"), "utf8")) as { url: string; pin: string };
    const conn = await connect(enrollment.url, enrollment.pin, await loadIdentity(join(stateDir, "agent.key")));
    const http = { url: enrollment.url, pin: enrollment.pin, token: conn.session.sessionToken };
    try {
      // One agent process per download of the many at once (the single download uses the first).
      const agents = Array.from({ length: n }, () => new AgentProcess());
      sb.onCleanup(() => Promise.all(agents.map((a) => a.close())).then(() => undefined));
      await Promise.all(agents.map((a) => a.ready()));
      /** The agent's production path for one release into its own directory: verify, then download. */
      const agentFetch = (agent: AgentProcess, name: string, dir: string) => {
        const r = releases[name]!;
        return agent.fetch({ http, name, targetPath: r.targetPath, length: r.length, dir });
      };
      const urlOf = (name: string) => {
        const r = releases[name]!;
        return `${enrollment.url}${targetUrlPath({ path: r.targetPath, sha256: r.sha256, length: r.length })}`;
      };
      const dirs = Array.from({ length: n }, (_, i) => join(work, `d${i}`));
      const fresh = async (list: string[]) => {
        await Promise.all(list.map((d) => rm(d, { recursive: true, force: true })));
        await Promise.all(list.map((d) => mkdir(d, { recursive: true })));
      };
      const runs = { single: emptyRuns(), concurrent: emptyRuns() };
      let curlVersion = "";
      for (let round = 1; round <= rounds; round++) {
        for (const [kind, name, list] of [["single", "big", dirs.slice(0, 1)], ["concurrent", "small", dirs]] as const) {
          const bytes = list.length * releases[name]!.length;
          const r = runs[kind];
          await fresh(list);
          const gb = bytes / 1e9;
          const t0 = performance.now();
          const cpu = await Promise.all(list.map((d, i) => agentFetch(agents[i]!, name, d)));
          r.agentCpu.push(cpu.reduce((a, b) => a + b.cpuS, 0) / gb);
          r.agentVerifyCpu.push(cpu.reduce((a, b) => a + b.verifyCpuS, 0) / gb);
          r.agent.push(bytes / MB / ((performance.now() - t0) / 1000));
          await fresh(list);
          let c0 = await childrenCpuSeconds();
          const h2 = await curlAll(urlOf(name), http.token, list.map((d) => join(d, `${name}.bin`)), false);
          r.curlCpu.push(((await childrenCpuSeconds()) - c0) / gb);
          curlVersion = h2.httpVersion;
          r.curl.push(bytes / MB / h2.seconds);
          await fresh(list);
          c0 = await childrenCpuSeconds();
          const h1 = await curlAll(urlOf(name), http.token, list.map((d) => join(d, `${name}.bin`)), true);
          r.curlHttp1Cpu.push(((await childrenCpuSeconds()) - c0) / gb);
          r.curlHttp1.push(bytes / MB / h1.seconds);
          await Promise.all(list.map((d) => rm(d, { recursive: true, force: true })));
          log(`  round ${round}/${rounds}, ${list.length} at once: agent ${r.agent.at(-1)!.toFixed(0)} MB/s, curl ${r.curl.at(-1)!.toFixed(0)} MB/s, curl --http1.1 ${r.curlHttp1.at(-1)!.toFixed(0)} MB/s`);
        }
      }
      return {
        transport: host ? "TLS" : "plain HTTP over loopback",
        curlHttpVersion: curlVersion,
        rounds,
        single: summary(runs.single, { downloads: 1, bytesEach: releases.big!.length }),
        concurrent: summary(runs.concurrent, { downloads: n, bytesEach: releases.small!.length }),
      };
    } finally {
      conn.close();
    }
  } finally {
    await sb.cleanup();
  }
}

/** The result as table lines. */
export function downloadTable(r: DownloadResult): string[] {
  const row = (label: string, f: DownloadFigures) => [label, f.agentMBps.toFixed(0), f.curlMBps.toFixed(0), f.curlHttp1MBps.toFixed(0), f.ratio.toFixed(2)];
  const rows = [
    ["", "agent (MB/s)", `curl HTTP/${r.curlHttpVersion} + fsync`, "curl HTTP/1.1 + fsync", "ratio to the faster curl"],
    row(`one download of ${(r.single.bytesEach / MB).toFixed(0)} MB`, r.single),
    row(`${r.concurrent.downloads} at once, ${(r.concurrent.bytesEach / MB).toFixed(0)} MB each`, r.concurrent),
  ];
  const cpu = (label: string, f: DownloadFigures) => [label, f.agentCpuPerGB.toFixed(2), f.curlCpuPerGB.toFixed(2), f.curlHttp1CpuPerGB.toFixed(2), (f.agentCpuPerGB / Math.min(f.curlCpuPerGB, f.curlHttp1CpuPerGB)).toFixed(2)];
  rows.push(["CPU seconds per GB", "agent", "curl", "curl HTTP/1.1", "agent / the leaner curl"]);
  rows.push(cpu("  one download", r.single), cpu(`  ${r.concurrent.downloads} at once`, r.concurrent));
  const verify = (label: string, f: DownloadFigures) => [label, f.agentVerifyCpuPerGB === undefined ? "-" : f.agentVerifyCpuPerGB.toFixed(2), "", "", ""];
  rows.push(verify("    of which TUF verification", r.single), verify(`    of which TUF verification, ${r.concurrent.downloads} at once`, r.concurrent));
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((x) => x[i]!.length)));
  return rows.map((x) => `  ${x.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")}`);
}

export async function benchDownload(print: (line: string) => void): Promise<void> {
  print("artifact download: the agent's verify + streaming download (hash while writing, fsync) beside curl -o FILE && sync FILE, same coordinator, same run");
  const r = await measureDownloads(print);
  print(`  transport: ${r.transport}; the agent speaks HTTP/1.1; MB/s are medians of ${r.rounds} rounds`);
  for (const line of downloadTable(r)) print(line);
  const file = await writeResult("download", { ...r });
  print(`  written to ${file}`);
}

// Runnable on its own as well: `npx tsx bench/download.ts --size-mb 100`.
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await benchDownload((line) => process.stdout.write(`${line}\n`));
