/**
 * `npm run bench -- targets`: the scale targets (issue 16) beside the newest figure measured for
 * each, read from bench/results/ (no benchmark runs here): the figure, whether it meets the
 * target, and the run it comes from. `npm run bench -- fleet` prints it at its end, so one command
 * shows every figure: its own fresh ones and the newest of the other benchmarks, each with its
 * date. A target with no run on record says which command measures it.
 */
import { pathToFileURL } from "node:url";
import type { AgentFootprint } from "./agent.ts";
import type { DownloadResult } from "./download.ts";
import type { FleetResult } from "./fleet.ts";
import type { Figures, ReportWindow } from "./report.ts";
import { readResults, type StoredResult } from "./results.ts";

/** One target's row: what it asks, the figure, whether it is met, and where the figure is from. */
export interface TargetRow {
  target: string;
  goal: string;
  figure: string;
  met: boolean | undefined;
  source: string;
}

/**
 * The figures of each kind as their benchmarks write them. Written by older versions too, so
 * every figure may be missing, and JSON writes a NaN (not measured) as null: each is checked
 * with `known` before use.
 */
interface FleetRun {
  results?: FleetResult[];
  failed?: { devices: number; replicas: number; error: string }[];
}
interface ReportRun {
  devices?: number;
  bare: Figures;
  coordinator: ReportWindow;
  paced?: { coordinator?: ReportWindow };
}
interface LogsRun {
  devices: number;
  oneDevice: { linesPerSecond: number; ratio: number };
  devicesAtOnce: { linesPerSecond: number; ratio: number };
}
interface TunnelRun {
  directMBps: number;
  tunnelMBps: number;
  ratio: number;
}
type Run<T> = StoredResult & { data: T };

/** A figure worth printing: a finite number (JSON writes NaN as null). */
const known = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x);
/** A figure as printed; "-" for one an older or damaged result file lacks. */
const fmt = (x: number, digits = 0) => (known(x) ? x.toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "-");
const from = (r: StoredResult) => `${r.date.slice(0, 16).replace("T", " ")} ${r.file}`;

/** The newest fleet run with a result for `devices` devices (one process) that has `has`. */
function fleetAt(runs: Run<FleetRun>[], devices: number, has: (r: FleetResult) => boolean): { run: StoredResult; r: FleetResult } | undefined {
  for (const run of runs) {
    const r = (run.data.results ?? []).find((x) => x.devices === devices && !x.replicas && has(x));
    if (r) return { run, r };
  }
  return undefined;
}

/** The newest fleet run that tried `devices` devices and recorded why that size failed. */
function fleetFailureAt(runs: Run<FleetRun>[], devices: number): { run: StoredResult; error: string } | undefined {
  for (const run of runs) {
    const f = (run.data.failed ?? []).find((x) => x.devices === devices && !x.replicas);
    if (f) return { run, error: String(f.error) };
  }
  return undefined;
}

const missing = (target: string, goal: string, command: string): TargetRow => ({ target, goal, figure: "not measured", met: undefined, source: command });

/** The targets table from the result files in `dir` (default bench/results). */
export async function targetRows(dir?: string): Promise<TargetRow[]> {
  const read = <T>(kind: string) => readResults(kind, dir) as Promise<Run<T>[]>;
  const [fleet, report, download, logs, tunnel, agent] = await Promise.all([
    read<FleetRun>("fleet"),
    read<ReportRun>("report"),
    read<DownloadResult>("download"),
    read<LogsRun>("logs"),
    read<TunnelRun>("tunnel"),
    read<AgentFootprint>("agent"),
  ]);
  const rows: TargetRow[] = [];

  // 20,000 idle devices: this machine's open-file limit (20,000) allows about 19,000; the
  // largest idle fleet measured stands in, named as such.
  {
    const target = "idle: 20,000 devices, one process, SQLite";
    const goal = "RSS < 1.5 GB, CPU < 25 % of a core";
    let best: { run: StoredResult; r: FleetResult } | undefined;
    for (const run of fleet) {
      for (const r of run.data.results ?? []) {
        if (r.replicas || !known(r.idle?.rssMiB)) continue;
        if (!best || r.devices > best.r.devices) best = { run, r };
      }
    }
    const failedLarger = fleet
      .flatMap((run) => (run.data.failed ?? []).map((f) => ({ run, f })))
      .filter(({ f }) => !f.replicas && (!best || f.devices > best.r.devices))
      .sort((a, b) => b.f.devices - a.f.devices)[0];
    if (!best) rows.push(missing(target, goal, "npm run bench -- fleet --devices 19000 --idle-only"));
    else {
      const { r, run } = best;
      const mb = (r.idle.rssMiB * 1024 * 1024) / 1e6;
      const atSize = r.devices >= 20_000;
      rows.push({
        target,
        goal,
        figure: `${fmt(r.devices)} devices: ${fmt(mb)} MB, ${fmt(r.idle.cpuCores * 100)} % of a core`,
        met: atSize ? mb < 1500 && r.idle.cpuCores < 0.25 : mb < 1500 && r.idle.cpuCores < 0.25 ? undefined : false,
        source: from(run),
      });
      if (failedLarger) {
        rows.push({ target: `  ${fmt(failedLarger.f.devices)} devices tried`, goal: "", figure: failedLarger.f.error, met: false, source: from(failedLarger.run) });
      }
    }
  }

  // Fan-out, rollout and admin latency at 10,000 devices, from the newest run that got that far.
  {
    // A run that got to the label change: it was seen everywhere, the rollout ran, or it was refused.
    const label = fleetAt(fleet, 10_000, (r) => known(r.labelFanOutSeconds) || known(r.rollout?.wallSeconds) || typeof r.failure === "string");
    const target = "fan-out to 10,000 devices (label change; rollout start)";
    if (!label) {
      const failure = fleetFailureAt(fleet, 10_000);
      rows.push(failure ? { target, goal: "< 1 s", figure: failure.error, met: false, source: from(failure.run) } : missing(target, "< 1 s", "npm run bench -- fleet --devices 1000,10000"));
    } else {
      const { r, run } = label;
      const l = known(r.labelFanOutSeconds)
        ? `${fmt(r.labelFanOutSeconds, 2)} s`
        : typeof r.failure === "string"
          ? r.failure
          : "not all within the deadline";
      const o = known(r.rollout?.fanOutSeconds) ? `${fmt(r.rollout.fanOutSeconds, 2)} s` : "not all within the deadline";
      const met = known(r.labelFanOutSeconds) && known(r.rollout?.fanOutSeconds) ? r.labelFanOutSeconds < 1 && r.rollout.fanOutSeconds < 1 : false;
      rows.push({ target, goal: "< 1 s", figure: `${l}; ${o}`, met, source: from(run) });
    }
  }
  {
    const at = fleetAt(fleet, 10_000, (r) => known(r.rollout?.wallSeconds));
    const target = "one-wave rollout to 10,000 devices, 7 steps each";
    if (!at) rows.push(missing(target, "< 60 s", "npm run bench -- fleet --devices 1000,10000"));
    else {
      const { r, run } = at;
      const done = r.rollout.finished ? "finished" : `unfinished: ${fmt(r.rollout.healthy)} healthy, ${fmt(r.rollout.failed)} failed`;
      rows.push({ target, goal: "< 60 s", figure: `${fmt(r.rollout.wallSeconds, 1)} s (${done})`, met: r.rollout.finished && r.rollout.wallSeconds < 60, source: from(run) });
      const small = ((run as Run<FleetRun>).data.results ?? []).find((x) => x.devices === 1000 && !x.replicas && known(x.rollout?.cpuMsPerDevice));
      if (small) {
        const g = r.rollout.cpuMsPerDevice / small.rollout.cpuMsPerDevice;
        const above = known(r.rollout.cpuMsPerDeviceAboveIdle) && known(small.rollout.cpuMsPerDeviceAboveIdle) && small.rollout.cpuMsPerDeviceAboveIdle > 0
          ? `; above idle ${fmt(r.rollout.cpuMsPerDeviceAboveIdle / small.rollout.cpuMsPerDeviceAboveIdle, 2)}`
          : "";
        rows.push({
          target: "  growth of coordinator CPU per device, 1k to 10k",
          goal: "≤ 1.5",
          figure: `${fmt(g, 2)} (${fmt(small.rollout.cpuMsPerDevice, 1)} to ${fmt(r.rollout.cpuMsPerDevice, 1)} ms${above})`,
          met: g <= 1.5,
          source: from(run),
        });
      }
      const ls = r.admin?.deviceLsDuringRollout;
      const show = r.admin?.rolloutShowDuringRollout;
      if (known(ls?.p99) || known(show?.p99)) {
        const worst = Math.max(known(ls?.p99) ? ls.p99 : 0, known(show?.p99) ? show.p99 : 0);
        const failed = (ls?.failed ?? 0) + (show?.failed ?? 0);
        rows.push({
          target: "admin calls during the 10,000-device rollout, p99",
          goal: "< 1 s",
          figure: `device ls ${known(ls?.p99) ? fmt(ls.p99) : "-"} ms, rollout show ${known(show?.p99) ? fmt(show.p99) : "-"} ms${failed ? `, ${failed} failed` : ""}`,
          met: worst < 1000 && failed === 0,
          source: from(run),
        });
      }
      const errors = (r.simErrorsDuringRollout ?? {}) as Record<string, number>;
      const timeouts = Object.entries(errors).filter(([k]) => /deadline|ping|timed out/i.test(k));
      const n = timeouts.reduce((s, [, v]) => s + v, 0);
      rows.push({
        target: "simulated devices' time-outs during that rollout",
        goal: "none",
        figure: n === 0 ? "none" : timeouts.map(([k, v]) => `${k} ${fmt(v)}`).join(", "),
        met: n === 0,
        source: from(run),
      });
    }
  }

  // Report RPC at 10,000 devices.
  {
    const run = report.find((x) => x.data.devices === 10_000);
    const target = "Report RPC at 10,000 devices, beside bare node:http2";
    if (!run) rows.push(missing(target, "≥ 0.5, p99 < 50 ms", "BENCH_REPORT_DEVICES=10000 npm run bench -- report"));
    else {
      const d = run.data;
      const ratio = d.coordinator.callsPerSecond / d.bare.callsPerSecond;
      const p99 = d.paced?.coordinator?.p99Ms;
      rows.push({
        target,
        goal: "≥ 0.5, p99 < 50 ms",
        figure: `${fmt(ratio, 2)} (${fmt(d.coordinator.callsPerSecond)} of ${fmt(d.bare.callsPerSecond)} calls/s); paced p99 < ${known(p99) ? fmt(p99) : "-"} ms`,
        met: ratio >= 0.5 && known(p99) && p99 <= 50,
        source: from(run),
      });
    }
  }

  // Artifact download: one agent, and 50 at once (the newest run that did 50).
  {
    const one = download[0];
    const fifty = download.find((x) => (x.data.concurrent?.downloads ?? 0) >= 50);
    const target = "artifact download, beside curl plus fsync";
    // The ratio is to the faster curl (HTTP/2 or HTTP/1.1; files before 2026-12-02 have only the first).
    const curl = (f: { curlMBps: number; curlHttp1MBps?: number }) => fmt(Math.max(f.curlMBps, f.curlHttp1MBps ?? 0));
    if (!one) rows.push(missing(target, "≥ 0.8", "npm run bench -- download"));
    else {
      const d = one.data;
      rows.push({ target: `${target}: one agent`, goal: "≥ 0.8", figure: `${fmt(d.single.ratio, 2)} (${fmt(d.single.agentMBps)} MB/s; curl ${curl(d.single)})`, met: d.single.ratio >= 0.8, source: from(one) });
      if (fifty) {
        const c = fifty.data.concurrent;
        rows.push({ target: `${target}: ${c.downloads} at once`, goal: "≥ 0.8", figure: `${fmt(c.ratio, 2)} (${fmt(c.agentMBps)} MB/s; curl ${curl(c)})`, met: c.ratio >= 0.8, source: from(fifty) });
      }
    }
  }

  // Log ingestion and tunnel throughput.
  {
    const run = logs[0];
    const target = "log ingestion through ShipLogs, beside direct inserts";
    if (!run) rows.push(missing(target, "≥ 0.5 and ≥ 100,000 lines/s", "npm run bench -- logs"));
    else {
      const d = run.data;
      rows.push({
        target,
        goal: "≥ 0.5 and ≥ 100,000 lines/s",
        figure: `one device ${fmt(d.oneDevice.ratio, 2)} (${fmt(d.oneDevice.linesPerSecond)}/s), ${d.devices} at once ${fmt(d.devicesAtOnce.ratio, 2)} (${fmt(d.devicesAtOnce.linesPerSecond)}/s)`,
        // From one device or from several at once: either meeting both goals meets the target.
        met: [d.oneDevice, d.devicesAtOnce].some((x) => x.ratio >= 0.5 && x.linesPerSecond >= 100_000),
        source: from(run),
      });
    }
  }
  {
    const run = tunnel[0];
    const target = "tunnel throughput, beside direct loopback TCP";
    if (!run) rows.push(missing(target, "≥ 0.5", "npm run bench -- tunnel"));
    else {
      const d = run.data;
      rows.push({ target, goal: "≥ 0.5", figure: `${fmt(d.ratio, 2)} (${fmt(d.tunnelMBps)} of ${fmt(d.directMBps)} MB/s)`, met: d.ratio >= 0.5, source: from(run) });
    }
  }

  // The agent's idle memory.
  {
    const run = agent[0];
    const target = "idle agent RSS";
    if (!run) rows.push(missing(target, "≤ 50 MB", "npm run build && npm run bench -- agent"));
    else {
      const d = run.data;
      const mb = (d.agent.rssMiB * 1024 * 1024) / 1e6;
      rows.push({ target, goal: "≤ 50 MB", figure: `${fmt(mb, 1)} MB (bare node ${fmt((d.bareNode.rssMiB * 1024 * 1024) / 1e6, 1)} MB)`, met: mb <= 50, source: from(run) });
    }
  }
  return rows;
}

/** The rows as a table: met, NOT MET, or "?" (met at a smaller size than the target's). */
export function targetTable(rows: TargetRow[]): string[] {
  const mark = (r: TargetRow) => (r.figure === "not measured" ? "" : r.met === undefined ? "?" : r.met ? "met" : "NOT MET");
  const table = [["target", "goal", "", "latest figure", "measured (UTC) and result file, or the command"], ...rows.map((r) => [r.target, r.goal, mark(r), r.figure, r.source])];
  const widths = [0, 1, 2].map((i) => Math.max(...table.map((row) => row[i]!.length)));
  return table.map((row) => `  ${row[0]!.padEnd(widths[0]!)}  ${row[1]!.padEnd(widths[1]!)}  ${row[2]!.padEnd(widths[2]!)}  ${row[3]}  [${row[4]}]`);
}

/** Prints the targets table from bench/results. */
export async function benchTargets(print: (line: string) => void): Promise<void> {
  print("scale targets (issue 16) and the newest figure on record for each (bench/results/):");
  for (const line of targetTable(await targetRows())) print(line);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await benchTargets((l) => process.stdout.write(`${l}\n`));
