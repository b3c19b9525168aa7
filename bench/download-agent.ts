/**
 * The agent's side of `npm run bench -- download`, in a process of its own as an agent is: reads
 * one JSON job per line from standard input, runs the agent's production path for it (TUF
 * verification of the release, then the streaming download: verifyRelease and downloadTarget)
 * and answers one JSON line with the CPU seconds this process spent on it, and on verification
 * alone. Stops when its standard input ends. It sets the agent's V8 flags on itself as `flotilla
 * agent` does (applyAgentV8Flags, before it loads the agent's modules), so that the download
 * turns V8's optimising compiler on and off as an agent's does.
 */
import { createInterface } from "node:readline";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { applyAgentV8Flags } from "@flotilla/protocol/agent-flags";

applyAgentV8Flags();
const { downloadTarget, verifyRelease } = await import("@flotilla/agent/testing");

export interface DownloadJob {
  http: { url: string; pin: string; token: string };
  name: string;
  targetPath: string;
  length: number;
  dir: string;
}

export interface DownloadDone {
  cpuS?: number;
  /** The part of cpuS spent before the download: TUF verification (its connections included) */
  verifyCpuS?: number;
  error?: string;
}

async function run(job: DownloadJob): Promise<DownloadDone> {
  const cpu0 = process.cpuUsage();
  const v = await verifyRelease({ http: job.http, metadataDir: join(job.dir, "tuf"), name: job.name, targetPath: job.targetPath, installed: undefined, arch: "bench" });
  const verified = process.cpuUsage(cpu0);
  const verifyCpuS = (verified.user + verified.system) / 1e6;
  const file = await downloadTarget({
    http: job.http,
    target: { path: v.path, sha256: v.sha256, length: v.length },
    staging: join(job.dir, "staging"),
    bytesPerSecond: 0,
    signal: new AbortController().signal,
    progress: () => {},
    verifying: () => {},
  });
  const cpu = process.cpuUsage(cpu0);
  if ((await stat(file)).size !== job.length) throw new Error(`the agent downloaded ${file} with the wrong size`);
  return { cpuS: (cpu.user + cpu.system) / 1e6, verifyCpuS };
}

process.stdout.write("ready\n");
for await (const line of createInterface({ input: process.stdin })) {
  const done = await run(JSON.parse(line) as DownloadJob).catch((err: unknown): DownloadDone => ({ error: err instanceof Error ? err.message : String(err) }));
  process.stdout.write(`${JSON.stringify(done)}\n`);
}
