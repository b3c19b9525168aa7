/** CPU, memory, disk and network over time, from GetMetrics, drawn with uPlot. */
import { useEffect, useMemo, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { telemetry, type MetricSample } from "./api.ts";
import { Empty, ErrorLine, useLoad } from "./ui.tsx";

interface Series {
  title: string;
  unit: string;
  labels: string[];
  /** x (seconds), then one array per label; null is a gap. */
  data: (number | null)[][];
}

/** Turns samples (oldest first) into the four charts' series. */
export function chartSeries(samples: MetricSample[]): Series[] {
  const xs: number[] = [];
  const cpu: number[] = [];
  const mem: number[] = [];
  const disk: number[] = [];
  const rx: number[] = [];
  const tx: number[] = [];
  let prev: { t: number; rx: number; tx: number } | undefined;
  for (const s of samples) {
    const t = Number(s.timeUnixMs) / 1000;
    let busy = 0,
      memUsed = NaN,
      diskMax = NaN,
      inBytes = 0,
      outBytes = 0;
    for (const v of s.values) {
      if (v.name === "system.cpu.utilization" && v.attributes.state !== "idle") busy += v.value;
      else if (v.name === "system.memory.utilization") memUsed = v.value;
      else if (v.name === "system.filesystem.utilization") diskMax = Number.isNaN(diskMax) ? v.value : Math.max(diskMax, v.value);
      else if (v.name === "system.network.io" && v.attributes.device !== "lo") {
        if (v.attributes.direction === "receive") inBytes += v.value;
        else outBytes += v.value;
      }
    }
    xs.push(t);
    cpu.push(busy * 100);
    mem.push(memUsed * 100);
    disk.push(diskMax * 100);
    // Counters become rates between samples; a reset (agent restart) shows as a gap.
    const dt = prev ? t - prev.t : 0;
    rx.push(prev && dt > 0 && inBytes >= prev.rx ? (inBytes - prev.rx) / dt : NaN);
    tx.push(prev && dt > 0 && outBytes >= prev.tx ? (outBytes - prev.tx) / dt : NaN);
    prev = { t, rx: inBytes, tx: outBytes };
  }
  // uPlot draws null as a gap; NaN would spoil its scale.
  const gaps = (values: number[]) => values.map((v) => (Number.isFinite(v) ? v : null));
  return [
    { title: "CPU", unit: "%", labels: ["busy"], data: [xs, gaps(cpu)] },
    { title: "Memory", unit: "%", labels: ["used"], data: [xs, gaps(mem)] },
    { title: "Disk", unit: "%", labels: ["fullest filesystem"], data: [xs, gaps(disk)] },
    { title: "Network", unit: "B/s", labels: ["receive", "transmit"], data: [xs, gaps(rx), gaps(tx)] },
  ];
}

const COLORS = ["#3b82f6", "#f59e0b"];

function Chart({ s }: { s: Series }) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!el.current) return;
    const dark = matchMedia("(prefers-color-scheme: dark)").matches;
    const axis = { stroke: dark ? "#cbd5e1" : "#334155", grid: { stroke: dark ? "#334155" : "#e2e8f0" } };
    const plot = new uPlot(
      {
        width: Math.max(240, el.current.clientWidth),
        height: 160,
        series: [{}, ...s.labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.5, value: (_u: uPlot, v: number | null) => (v == null ? "—" : `${v.toFixed(1)} ${s.unit}`) }))],
        axes: [axis, { ...axis, size: 60 }],
        scales: s.unit === "%" ? { y: { range: [0, 100] } } : {},
        legend: { show: true },
      },
      s.data as uPlot.AlignedData,
      el.current,
    );
    const resize = new ResizeObserver(() => el.current && plot.setSize({ width: Math.max(240, el.current.clientWidth), height: 160 }));
    resize.observe(el.current);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [s]);
  return (
    <figure className="chart">
      <figcaption>
        {s.title} ({s.unit})
      </figcaption>
      <div ref={el} role="img" aria-label={`${s.title} over the last ${s.data[0]!.length} samples`} />
    </figure>
  );
}

export function MetricsCharts({ device }: { device: string }) {
  const m = useLoad(() => telemetry.getMetrics({ device, limit: 360 }), [device], 15_000);
  const samples = useMemo(() => (m.data ? [...m.data.samples].sort((a, b) => Number(a.timeUnixMs - b.timeUnixMs)) : []), [m.data]);
  const series = useMemo(() => chartSeries(samples), [samples]);
  return (
    <>
      <ErrorLine error={m.error} />
      {m.data && samples.length === 0 && <Empty>No metrics received from this device yet.</Empty>}
      {samples.length > 0 && (
        <div className="charts">
          {series.map((s) => (
            <Chart key={s.title} s={s} />
          ))}
        </div>
      )}
    </>
  );
}
