/** A device's metrics for people: `flotilla metrics`. */
import type { adminv1 } from "@flotilla/protocol";

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
