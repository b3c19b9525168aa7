/**
 * `npm run bench`: every benchmark, one after another, each printing its figures as a ratio
 * against a baseline measured in the same run. Benchmarks assert nothing about speed.
 * Add a benchmark: a module exporting `bench<Name>(print)`, and one line below.
 */
import { benchLogs } from "./logs.ts";
import { benchTunnel } from "./tunnel.ts";

const benchmarks: [string, (print: (line: string) => void) => Promise<void>][] = [
  ["logs", benchLogs],
  ["tunnel", benchTunnel],
];

const only = process.argv.slice(2);
for (const [name, run] of benchmarks) {
  if (only.length > 0 && !only.includes(name)) continue;
  await run((line) => process.stdout.write(`${line}\n`));
}
