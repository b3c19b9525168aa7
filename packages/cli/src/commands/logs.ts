import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Command } from "commander";
import { adminv1 } from "@flotilla/protocol";
import { adminTransport, type AdminTarget } from "../admin/client.ts";
import { UsageError } from "../errors.ts";
import { json, parseDuration } from "../output.ts";
import type { Run } from "./run.ts";

interface LogsOptions {
  unit?: string;
  since?: string;
  grep?: string;
  follow?: boolean;
  selector?: string;
  lines: string;
  json?: boolean;
}

function lineText(l: adminv1.LogLine, prefix: boolean): string {
  const time = new Date(Number(l.timeUnixMs)).toISOString();
  return `${prefix ? `${l.deviceName} | ` : ""}${time} ${l.unit}[${l.source}]: ${l.line}\n`;
}

function lineJson(l: adminv1.LogLine): string {
  return `${JSON.stringify({ device: l.deviceName, deviceId: l.deviceId, time: new Date(Number(l.timeUnixMs)).toISOString(), unit: l.unit, source: l.source, seq: Number(l.seq), line: l.line })}\n`;
}

function count(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 10_000) throw new UsageError(`${what} must be a whole number from 0 to 10000`);
  return n;
}

const fmtBytes = (n: number) => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
};
const pct = (r: number) => `${(r * 100).toFixed(1)}%`;
const fmtUptime = (s: number) => `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h ${Math.floor((s % 3600) / 60)}m`;

/** The current and recent values of a device, for people. */
export function metricsText(res: adminv1.GetMetricsResponse): string {
  const samples = res.samples;
  const last = samples.at(-1);
  const out = [`device ${res.deviceName} (${res.deviceId})`];
  if (!last) return `${out[0]}\nno metrics received yet\n`;
  const get = (s: adminv1.MetricSample, name: string, attrs: Record<string, string> = {}) =>
    s.values.filter((v) => v.name === name && Object.entries(attrs).every(([k, x]) => v.attributes[k] === x));
  const one = (s: adminv1.MetricSample, name: string, attrs?: Record<string, string>) => get(s, name, attrs)[0]?.value;
  const busy = (s: adminv1.MetricSample) => {
    const idle = one(s, "system.cpu.utilization", { state: "idle" });
    return idle === undefined ? undefined : 1 - idle;
  };
  out.push(`sampled   ${new Date(Number(last.timeUnixMs)).toISOString()} (${samples.length} recent samples)`);
  const cpuNow = busy(last);
  const recent = samples.map(busy).filter((v): v is number => v !== undefined);
  if (cpuNow !== undefined) {
    const avg = recent.reduce((a, b) => a + b, 0) / recent.length;
    out.push(`cpu       ${pct(cpuNow)} (recent avg ${pct(avg)}, max ${pct(Math.max(...recent))}; ${one(last, "system.cpu.logical.count") ?? "?"} CPUs)`);
  }
  const load = ["1m", "5m", "15m"].map((w) => one(last, `system.cpu.load_average.${w}`)?.toFixed(2) ?? "?");
  out.push(`load      ${load.join(" ")}`);
  const used = one(last, "system.memory.usage", { state: "used" });
  const limit = one(last, "system.memory.limit");
  if (used !== undefined && limit) out.push(`memory    ${fmtBytes(used)} used of ${fmtBytes(limit)} (${pct(used / limit)})`);
  for (const fs of get(last, "system.filesystem.utilization")) {
    const mp = fs.attributes.mountpoint ?? "";
    const fsUsed = one(last, "system.filesystem.usage", { mountpoint: mp, state: "used" }) ?? 0;
    out.push(`disk      ${mp}: ${fmtBytes(fsUsed)} used (${pct(fs.value)})`);
  }
  const prev = samples.at(-2);
  for (const rx of get(last, "system.network.io", { direction: "receive" })) {
    const dev = rx.attributes.device ?? "";
    const tx = one(last, "system.network.io", { device: dev, direction: "transmit" }) ?? 0;
    let rate = "";
    if (prev) {
      const dt = Number(last.timeUnixMs - prev.timeUnixMs) / 1000;
      const prx = one(prev, "system.network.io", { device: dev, direction: "receive" });
      const ptx = one(prev, "system.network.io", { device: dev, direction: "transmit" });
      if (dt > 0 && prx !== undefined && ptx !== undefined) rate = ` (now ${fmtBytes((rx.value - prx) / dt)}/s in, ${fmtBytes((tx - ptx) / dt)}/s out)`;
    }
    out.push(`network   ${dev}: ${fmtBytes(rx.value)} in, ${fmtBytes(tx)} out${rate}`);
  }
  const up = one(last, "system.uptime");
  if (up !== undefined) out.push(`uptime    ${fmtUptime(up)}`);
  out.push(`dropped   ${res.logsDropped} log lines, ${res.metricsDropped} samples (buffer full while offline)`);
  return out.join("\n") + "\n";
}

export function registerLogsCommands(program: Command, target: () => AdminTarget, run: Run): void {
  program
    .command("logs [device]")
    .description("show device logs: one device (id or name), or those a selector matches, prefixed by name")
    .option("--unit <unit>", "only this unit, e.g. webapp or flotilla-agent")
    .option("--since <duration>", "only lines from this long ago, e.g. 90s, 15m, 1h, 7d")
    .option("--grep <text>", "only lines containing this text (case-insensitive)")
    .option("-s, --selector <selector>", "devices matching a selector, e.g. 'site=lab'")
    .option("-n, --lines <n>", "how many of the newest lines to show (with -f: to show first)", "")
    .option("-f, --follow", "keep printing new lines as they arrive (Ctrl-C stops)")
    .option("--json", "one JSON object per line")
    .action((device: string | undefined, opts: LogsOptions) =>
      run(async (out) => {
        if (device && opts.selector) throw new UsageError("give a device or --selector, not both");
        const filter = {
          device: device ?? "",
          selector: opts.selector ?? "",
          unit: opts.unit ?? "",
          grep: opts.grep ?? "",
          sinceUnixMs: opts.since ? BigInt(Date.now() - parseDuration(opts.since)) : 0n,
        };
        const n = count(opts.lines || (opts.follow ? "10" : "1000"), "--lines");
        const prefix = !device;
        const print = (l: adminv1.LogLine) => out(opts.json ? lineJson(l) : lineText(l, prefix));
        const client = createClient(adminv1.TelemetryService, await adminTransport(target()));
        if (!opts.follow) {
          const { lines } = await client.queryLogs({ filter, limit: n });
          lines.forEach(print);
          return;
        }
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once("SIGINT", onSignal);
        process.once("SIGTERM", onSignal);
        try {
          for await (const msg of client.followLogs({ filter, tail: n }, { signal: stop.signal })) msg.lines.forEach(print);
        } catch (err) {
          if (!(stop.signal.aborted && ConnectError.from(err).code === Code.Canceled)) throw err;
        } finally {
          process.off("SIGINT", onSignal);
          process.off("SIGTERM", onSignal);
        }
      }),
    );

  program
    .command("metrics <device>")
    .description("a device's current and recent CPU, memory, disk, network, load and uptime")
    .option("--samples <n>", "how many recent samples to fetch", "60")
    .option("--json", "print the samples as JSON")
    .action((device: string, opts: { samples: string; json?: boolean }) =>
      run(async (out) => {
        const client = createClient(adminv1.TelemetryService, await adminTransport(target()));
        const res = await client.getMetrics({ device, limit: count(opts.samples, "--samples") || 1 });
        if (!opts.json) return out(metricsText(res));
        out(
          json({
            device: res.deviceName,
            deviceId: res.deviceId,
            logsDropped: Number(res.logsDropped),
            metricsDropped: Number(res.metricsDropped),
            samples: res.samples.map((s) => ({
              time: new Date(Number(s.timeUnixMs)).toISOString(),
              values: s.values.map((v) => ({ name: v.name, value: v.value, attributes: v.attributes, unit: v.unit })),
            })),
          }),
        );
      }),
    );
}
