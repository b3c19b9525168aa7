import type { Logger } from "@flotilla/protocol";
import type { DeviceRow, MetricSampleRow } from "../store/index.ts";
import type { TelemetryCounters } from "./counters.ts";

type Attr = { key: string; value: { stringValue: string } };

const attrs = (m: Record<string, string>): Attr[] => Object.entries(m).map(([key, v]) => ({ key, value: { stringValue: v } }));

/** One device's samples as an OTLP/JSON ResourceMetrics (opentelemetry-proto metrics/v1, JSON mapping). */
export function toResourceMetrics(device: Pick<DeviceRow, "id" | "name" | "orgId">, samples: MetricSampleRow[]) {
  const byName = new Map<string, { unit: string; monotonic: boolean; points: unknown[] }>();
  for (const s of samples) {
    const timeUnixNano = `${BigInt(s.time) * 1_000_000n}`;
    for (const p of s.points) {
      let m = byName.get(p.name);
      if (!m) byName.set(p.name, (m = { unit: p.unit, monotonic: p.monotonic, points: [] }));
      m.points.push({ timeUnixNano, asDouble: p.value, attributes: attrs(p.attributes) });
    }
  }
  return {
    resource: {
      attributes: attrs({ "service.name": "flotilla-agent", "host.name": device.name, "flotilla.device.id": device.id, "flotilla.org.id": device.orgId }),
    },
    scopeMetrics: [
      {
        scope: { name: "flotilla" },
        metrics: [...byName].map(([name, m]) => ({
          name,
          unit: m.unit,
          // Cumulative sums for counters (AGGREGATION_TEMPORALITY_CUMULATIVE = 2), gauges otherwise.
          ...(m.monotonic ? { sum: { aggregationTemporality: 2, isMonotonic: true, dataPoints: m.points } } : { gauge: { dataPoints: m.points } }),
        })),
      },
    ],
  };
}

const MAX_QUEUE = 1000;

/**
 * Forwards device metrics to an OpenTelemetry collector as OTLP/HTTP JSON (POST
 * `<url>/v1/metrics`), best effort: one request in flight, at most 1000 device batches waiting
 * (the oldest are discarded beyond that), a failed request is counted and logged, not retried.
 */
export class OtlpExporter {
  private queue: ReturnType<typeof toResourceMetrics>[] = [];
  private busy = false;
  private readonly endpoint: string;
  private lastWarn = 0;

  constructor(
    url: string,
    private readonly counters: TelemetryCounters,
    private readonly log: Logger,
  ) {
    this.endpoint = url.replace(/\/+$/, "").endsWith("/v1/metrics") ? url : `${url.replace(/\/+$/, "")}/v1/metrics`;
  }

  enqueue(device: DeviceRow, samples: MetricSampleRow[]): void {
    if (samples.length === 0) return;
    this.queue.push(toResourceMetrics(device, samples));
    if (this.queue.length > MAX_QUEUE) this.queue.splice(0, this.queue.length - MAX_QUEUE);
    void this.drain();
  }

  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, 100);
        try {
          const res = await fetch(this.endpoint, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ resourceMetrics: batch }),
            signal: AbortSignal.timeout(10_000),
          });
          if (!res.ok) throw new Error(`collector answered ${res.status}`);
          await res.arrayBuffer();
          this.counters.otlpExported += batch.length;
        } catch (err) {
          this.counters.otlpFailed += batch.length;
          if (Date.now() - this.lastWarn > 60_000) {
            this.lastWarn = Date.now();
            this.log.warn("cannot forward metrics to the OTLP collector", { url: this.endpoint, err: (err as Error).message });
          }
        }
      }
    } finally {
      this.busy = false;
    }
  }
}
