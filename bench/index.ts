/**
 * `npm run bench`: every benchmark, one after another, each printing its figures as a ratio
 * against a baseline measured in the same run. Benchmarks assert nothing about speed.
 * Add a benchmark: a module exporting `bench<Name>(print)`, and one line below.
 */
import { benchEnroll } from "./enroll.ts";
import { benchAgent } from "./agent.ts";
import { benchCapacity } from "./capacity.ts";
import { benchDownload } from "./download.ts";
import { benchFleet } from "./fleet.ts";
import { benchLogs } from "./logs.ts";
import { benchReport } from "./report.ts";
import { benchRollout } from "./rollout.ts";
import { benchTargets } from "./targets.ts";
import { benchTunnel } from "./tunnel.ts";
import { benchWeb } from "./web.ts";

const benchmarks: [string, (print: (line: string) => void) => Promise<void>][] = [
  ["logs", benchLogs],
  ["tunnel", benchTunnel],
  // Not in a plain `npm run bench` either: it needs Chromium. `npm run bench -- web`.
  ["web", benchWeb],
  // Not in a plain `npm run bench` either (about 10 minutes): rollout store cost per device at
  // 1,000 and 10,000 devices beside the code before wave counters. `npm run bench -- rollout`.
  ["rollout", benchRollout],
  ["download", benchDownload],
  ["agent", benchAgent],
  // Not in a plain `npm run bench`: it runs a simulated fleet for minutes. `npm run bench -- fleet`.
  ["fleet", benchFleet],
  // Not in a plain `npm run bench` either: report RPC calls/s and p99 beside a bare HTTP/2 server. `npm run bench -- report`.
  ["report", benchReport],
  // Not in a plain `npm run bench` either: it enrolls tens of thousands of devices. `npm run bench -- enroll`.
  ["enroll", benchEnroll],
  // Not in a plain `npm run bench` either: it needs root (cgroup CPU budgets) and PostgreSQL. `npm run bench -- capacity`.
  ["capacity", benchCapacity],
  // Reads bench/results only: the scale targets beside the newest figure of each. Last, so a plain
  // `npm run bench` ends with the targets table of what it just measured. `npm run bench -- targets`.
  ["targets", benchTargets],
];
const explicitOnly = new Set(["fleet", "rollout", "web", "enroll", "report", "capacity"]);

// Benchmark names; flags (`--devices 200,1000`) are for the benchmarks themselves.
const args = process.argv.slice(2);
const only = args.filter((a, i) => !a.startsWith("--") && !(args[i - 1]?.startsWith("--") && !args[i - 1]!.includes("=")));
for (const [name, run] of benchmarks) {
  if (only.length > 0 ? !only.includes(name) : explicitOnly.has(name)) continue;
  await run((line) => process.stdout.write(`${line}\n`));
}
