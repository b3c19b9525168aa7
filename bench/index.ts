/**
 * `npm run bench`: every benchmark, one after another, each printing its figures as a ratio
 * against a baseline measured in the same run. Benchmarks assert nothing about speed.
 * Add a benchmark: a module exporting `bench<Name>(print)`, and one line below.
 */
import { benchAgent } from "./agent.ts";
import { benchDownload } from "./download.ts";
import { benchFleet } from "./fleet.ts";
import { benchLogs } from "./logs.ts";
import { benchTunnel } from "./tunnel.ts";

const benchmarks: [string, (print: (line: string) => void) => Promise<void>][] = [
  ["logs", benchLogs],
  ["tunnel", benchTunnel],
  ["download", benchDownload],
  ["agent", benchAgent],
  // Not in a plain `npm run bench`: it runs a simulated fleet for minutes. `npm run bench -- fleet`.
  ["fleet", benchFleet],
];
const explicitOnly = new Set(["fleet"]);

// Benchmark names; flags (`--devices 200,1000`) are for the benchmarks themselves.
const args = process.argv.slice(2);
const only = args.filter((a, i) => !a.startsWith("--") && !(args[i - 1]?.startsWith("--") && !args[i - 1]!.includes("=")));
for (const [name, run] of benchmarks) {
  if (only.length > 0 ? !only.includes(name) : explicitOnly.has(name)) continue;
  await run((line) => process.stdout.write(`${line}\n`));
}
