import { readFile, statfs } from "node:fs/promises";
import { cpus, freemem, loadavg, totalmem, uptime } from "node:os";

/** One value of a sample, named after the OpenTelemetry system metrics conventions. */
export interface Point {
  name: string;
  value: number;
  attributes: Record<string, string>;
  /** UCUM-style unit as in the conventions: "1", "By", "s", "{process}". */
  unit: string;
  /** A counter that only grows (true) or a gauge (false). */
  monotonic: boolean;
}

type CpuTimes = { user: number; system: number; idle: number; other: number };

function cpuTimes(): CpuTimes {
  const t = { user: 0, system: 0, idle: 0, other: 0 };
  for (const c of cpus()) {
    t.user += c.times.user + c.times.nice;
    t.system += c.times.sys;
    t.idle += c.times.idle;
    t.other += c.times.irq;
  }
  return t;
}

async function meminfo(): Promise<Record<string, number> | undefined> {
  try {
    const out: Record<string, number> = {};
    for (const line of (await readFile("/proc/meminfo", "utf8")).split("\n")) {
      const m = /^(\w+):\s+(\d+)\s*kB/.exec(line);
      if (m) out[m[1]!] = Number(m[2]) * 1024;
    }
    return out;
  } catch {
    return undefined;
  }
}

async function netDev(): Promise<{ device: string; rx: number; tx: number }[]> {
  try {
    return (await readFile("/proc/net/dev", "utf8"))
      .split("\n")
      .slice(2)
      .flatMap((line) => {
        const m = /^\s*([^:\s]+):\s*(.*)$/.exec(line);
        if (!m || m[1] === "lo") return [];
        const f = m[2]!.trim().split(/\s+/).map(Number);
        return [{ device: m[1]!, rx: f[0] ?? 0, tx: f[8] ?? 0 }];
      });
  } catch {
    return [];
  }
}

const gauge = (name: string, value: number, unit: string, attributes: Record<string, string> = {}): Point => ({ name, value, unit, attributes, monotonic: false });
const counter = (name: string, value: number, unit: string, attributes: Record<string, string> = {}): Point => ({ name, value, unit, attributes, monotonic: true });

/**
 * Reads CPU, memory, filesystem, network, load and uptime of this machine. CPU utilization is
 * measured over the time since the previous sample (the first one since construction). Cheap:
 * a few small /proc reads and one statfs per mount point.
 */
export class SystemSampler {
  private prev = cpuTimes();

  /** `mountpoints`: filesystems to report (default "/"). */
  constructor(private readonly mountpoints: string[] = ["/"]) {}

  async sample(): Promise<Point[]> {
    const points: Point[] = [];
    const now = cpuTimes();
    const d = { user: now.user - this.prev.user, system: now.system - this.prev.system, idle: now.idle - this.prev.idle, other: now.other - this.prev.other };
    this.prev = now;
    const total = d.user + d.system + d.idle + d.other;
    if (total > 0) {
      for (const state of ["user", "system", "idle", "other"] as const) {
        points.push(gauge("system.cpu.utilization", d[state] / total, "1", { state }));
      }
    }
    points.push(gauge("system.cpu.logical.count", cpus().length, "{cpu}"));
    const [l1, l5, l15] = loadavg();
    points.push(gauge("system.cpu.load_average.1m", l1 ?? 0, "{thread}"));
    points.push(gauge("system.cpu.load_average.5m", l5 ?? 0, "{thread}"));
    points.push(gauge("system.cpu.load_average.15m", l15 ?? 0, "{thread}"));

    const mem = await meminfo();
    const memTotal = mem?.MemTotal ?? totalmem();
    const free = mem?.MemFree ?? freemem();
    const cached = mem?.Cached ?? 0;
    const buffered = mem?.Buffers ?? 0;
    const used = Math.max(0, memTotal - (mem?.MemAvailable ?? free));
    points.push(gauge("system.memory.usage", used, "By", { state: "used" }));
    points.push(gauge("system.memory.usage", free, "By", { state: "free" }));
    points.push(gauge("system.memory.usage", cached, "By", { state: "cached" }));
    points.push(gauge("system.memory.usage", buffered, "By", { state: "buffered" }));
    points.push(gauge("system.memory.limit", memTotal, "By"));
    if (memTotal > 0) points.push(gauge("system.memory.utilization", used / memTotal, "1", { state: "used" }));

    for (const mountpoint of this.mountpoints) {
      try {
        const s = await statfs(mountpoint);
        const size = s.blocks * s.bsize;
        const avail = s.bavail * s.bsize;
        const usedBytes = (s.blocks - s.bfree) * s.bsize;
        points.push(gauge("system.filesystem.usage", usedBytes, "By", { mountpoint, state: "used" }));
        points.push(gauge("system.filesystem.usage", avail, "By", { mountpoint, state: "free" }));
        points.push(gauge("system.filesystem.limit", size, "By", { mountpoint }));
        if (size > 0) points.push(gauge("system.filesystem.utilization", usedBytes / (usedBytes + avail || 1), "1", { mountpoint }));
      } catch {
        // A mount point that vanished is simply not reported.
      }
    }

    for (const n of await netDev()) {
      points.push(counter("system.network.io", n.rx, "By", { device: n.device, direction: "receive" }));
      points.push(counter("system.network.io", n.tx, "By", { device: n.device, direction: "transmit" }));
    }
    points.push(gauge("system.uptime", uptime(), "s"));
    return points;
  }
}
