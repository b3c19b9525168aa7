import { timingSafeEqual } from "node:crypto";
import type { Logger } from "@flotilla/protocol";
import { pathOf, sendText, type HttpRoute } from "../server/http.ts";
import { isLoopback } from "../server/listen.ts";
import type { Store } from "../store/index.ts";
import type { TelemetryCounters } from "./counters.ts";

type Labels = Record<string, string>;
interface Family {
  help: string;
  type: "gauge" | "counter";
  samples: { labels: Labels; value: number }[];
}

/** Builds the Prometheus text exposition format (version 0.0.4). */
export class Exposition {
  private readonly families = new Map<string, Family>();
  private readonly series = new Set<string>();

  /**
   * Adds a sample to the family `name` (created with `type` and `help` on first use). A second
   * sample with the same name and labels is left out: each series appears once.
   */
  add(name: string, type: Family["type"], help: string, value: number, labels: Labels = {}): void {
    const key = JSON.stringify([name, Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
    if (this.series.has(key)) return;
    this.series.add(key);
    let f = this.families.get(name);
    if (!f) this.families.set(name, (f = { help, type, samples: [] }));
    f.samples.push({ labels, value });
  }

  /** Whether a family of this name holds samples of another type. */
  clashes(name: string, type: Family["type"]): boolean {
    const f = this.families.get(name);
    return f !== undefined && f.type !== type;
  }

  text(): string {
    const out: string[] = [];
    for (const [name, f] of this.families) {
      out.push(`# HELP ${name} ${f.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`, `# TYPE ${name} ${f.type}`);
      for (const s of f.samples) {
        const labels = Object.entries(s.labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
        out.push(`${name}${labels.length ? `{${labels.join(",")}}` : ""} ${formatValue(s.value)}`);
      }
    }
    return out.join("\n") + "\n";
  }
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "+Inf" : "-Inf";
  return String(v);
}

const UNIT_SUFFIX: Record<string, string> = { "1": "ratio", By: "bytes", s: "seconds" };

/**
 * Every device metric's family begins with this, so that no name a device chooses can add
 * samples to the coordinator's own families (`process_*`, `nodejs_*`, `flotilla_*`): none of
 * those begins with `flotilla_device_`.
 */
export const DEVICE_METRIC_PREFIX = "flotilla_device_";

/** Suffixes Prometheus reserves for counters, histograms and summaries; a gauge's name ending in one gets `_value`. */
const RESERVED_SUFFIX = /_(total|count|sum|bucket)$/;
/** Label names Prometheus gives a meaning (histogram buckets, summary quantiles), besides our own. */
const RESERVED_LABELS = new Set(["le", "quantile"]);

/**
 * An OpenTelemetry metric name as Prometheus spells it (the OTLP-to-Prometheus conventions):
 * dots become underscores, the unit becomes a suffix, counters end in _total.
 */
export function prometheusName(name: string, unit: string, monotonic: boolean): string {
  let n = name.replace(/[^a-zA-Z0-9_]/g, "_");
  // Prometheus keeps _count for histograms and summaries: system.cpu.logical.count {cpu} becomes system_cpu_logical_cpus.
  if (n.endsWith("_count")) n = `${n.slice(0, -6)}_${/^\{(\w+)\}$/.exec(unit)?.[1] ?? "number"}s`;
  const suffix = UNIT_SUFFIX[unit];
  if (suffix && !n.endsWith(`_${suffix}`)) n += `_${suffix}`;
  if (monotonic) n += "_total";
  else if (RESERVED_SUFFIX.test(n)) n += "_value";
  return n;
}

/**
 * The family a device's metric is exposed as: its Prometheus name under DEVICE_METRIC_PREFIX.
 * Counters always end in `_total` and gauges never do, so two devices reporting one name with
 * different types land in two families.
 */
export function deviceFamily(name: string, unit: string, monotonic: boolean): string {
  return DEVICE_METRIC_PREFIX + prometheusName(name, unit, monotonic);
}

/**
 * The labels of a device's point: `org` and `device`, then its attributes, spelled as
 * Prometheus label names. An attribute named like a label already there (system.network.io's
 * "device") or like a reserved one is prefixed with the metric's second name segment
 * (`network_device`); one that still clashes gets trailing underscores.
 */
export function deviceLabels(org: string, device: string, metric: string, attributes: Record<string, string>): Labels {
  const labels: Labels = { org, device };
  for (const [k, v] of Object.entries(attributes)) {
    let key = k.replace(/[^a-zA-Z0-9_]/g, "_");
    if (key in labels || RESERVED_LABELS.has(key)) key = `${metric.split(".")[1] ?? "attr"}_${key}`.replace(/[^a-zA-Z0-9_]/g, "_");
    while (key in labels) key += "_";
    labels[key] = v;
  }
  return labels;
}

const startedAt = Date.now();

/** The coordinator's own, fleet-level and latest per-device metrics. */
export async function collect(store: Store, counters: TelemetryCounters, offlineAfterMs: number): Promise<string> {
  const e = new Exposition();
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  e.add("process_start_time_seconds", "gauge", "Start time of the coordinator process since the epoch, in seconds.", Math.floor(startedAt / 1000));
  e.add("process_resident_memory_bytes", "gauge", "Resident memory of the coordinator process.", mem.rss);
  e.add("process_cpu_seconds_total", "counter", "CPU time used by the coordinator process.", (cpu.user + cpu.system) / 1e6);
  e.add("nodejs_heap_used_bytes", "gauge", "V8 heap in use.", mem.heapUsed);

  e.add("flotilla_log_batches_received_total", "counter", "Log batches stored by this coordinator since it started.", counters.logBatches);
  e.add("flotilla_log_lines_received_total", "counter", "New log lines stored by this coordinator since it started.", counters.logLines);
  e.add("flotilla_log_lines_duplicate_total", "counter", "Resent log lines that were already stored.", counters.logLinesDuplicate);
  e.add("flotilla_metric_batches_received_total", "counter", "Device metric batches (ShipMetrics calls) stored since start.", counters.metricBatches);
  e.add("flotilla_metric_samples_received_total", "counter", "Device metric samples stored since start.", counters.metricSamples);
  e.add("flotilla_telemetry_batches_refused_total", "counter", "Telemetry batches refused (invalid or from unapproved devices).", counters.refusedBatches);
  e.add("flotilla_otlp_exported_total", "counter", "Device batches forwarded to the OTLP collector.", counters.otlpExported);
  e.add("flotilla_otlp_failed_total", "counter", "Device batches the OTLP collector did not take.", counters.otlpFailed);

  const now = Date.now();
  const states = new Map<string, number>();
  const deviceNames = new Map<string, { org: string; name: string }>();
  for (const org of await store.access.listOrgs()) {
    for (const d of await store.devices.listDevices(org.id)) {
      deviceNames.set(d.id, { org: org.name, name: d.name });
      const online = d.connected && d.lastSeenAt !== null && now - d.lastSeenAt < offlineAfterMs;
      const state = d.lifecycle === "approved" ? (online ? "online" : "offline") : d.lifecycle;
      const key = `${org.name}\u0000${state}`;
      states.set(key, (states.get(key) ?? 0) + 1);
    }
  }
  for (const [key, n] of states) {
    const [org = "", state = ""] = key.split("\u0000");
    e.add("flotilla_devices", "gauge", "Devices by organization and state.", n, { org, state });
  }
  for (const [stream, n] of Object.entries(await store.telemetry.droppedTotals())) {
    e.add("flotilla_agent_buffer_dropped_records", "gauge", "Records agents dropped unshipped to stay within their buffer bound, as reported, summed over devices.", n, { stream });
  }

  for (const s of await store.telemetry.latestMetrics()) {
    const d = deviceNames.get(s.deviceId);
    if (!d) continue;
    for (const p of s.points) {
      const name = deviceFamily(p.name, p.unit, p.monotonic);
      const type = p.monotonic ? "counter" : "gauge";
      if (e.clashes(name, type)) continue;
      e.add(name, type, `${p.name} (${p.unit}) of each device, its latest sample.`, p.value, deviceLabels(d.org, d.name, p.name, p.attributes));
    }
  }
  return e.text();
}

/**
 * GET /metrics. With a token configured, the caller must send `Authorization: Bearer <token>`;
 * without one, only loopback callers are served (a scraper on the same machine).
 */
export function metricsHandler(
  store: Store,
  counters: TelemetryCounters,
  opts: { token?: string; offlineAfterMs: number },
  log: Logger,
): HttpRoute {
  return (req, res) => {
    if (pathOf(req) !== "/metrics") return false;
    const send = (status: number, body: string, type = "text/plain; charset=utf-8") => sendText(res, status, body, { "content-type": type });
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(405, "method not allowed\n");
      return true;
    }
    if (opts.token) {
      const given = Buffer.from(String(req.headers.authorization ?? ""));
      const want = Buffer.from(`Bearer ${opts.token}`);
      if (given.length !== want.length || !timingSafeEqual(given, want)) {
        send(401, "a bearer token is required\n");
        return true;
      }
    } else if (!isLoopback((req.socket.remoteAddress ?? "").replace(/^::ffff:/, ""))) {
      send(403, "/metrics answers loopback callers only; set --metrics-token to allow others\n");
      return true;
    }
    collect(store, counters, opts.offlineAfterMs).then(
      (text) => send(200, text, "text/plain; version=0.0.4; charset=utf-8"),
      (err: unknown) => {
        log.warn("cannot collect metrics", { err: (err as Error).message });
        send(500, "cannot collect metrics\n");
      },
    );
    return true;
  };
}
