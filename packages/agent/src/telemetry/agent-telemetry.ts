import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzip as gzipCb } from "node:zlib";
import { agentv1, sleep, type Logger } from "@flotilla/protocol/agent";
import type { AgentConfig } from "../config.ts";
import { SystemSampler } from "./sampler.ts";
import { capturingLogger, LogCapture } from "./capture.ts";
import { FileTail } from "./file-tail.ts";
import { JournalTail } from "./journal.ts";
import { SegmentBuffer, type BufferedRecord, type DropStats } from "./segment-buffer.ts";
import { Shipper, type SendBatch } from "./shipper.ts";

const gzip = promisify(gzipCb);

/** TelemetryService.ShipLogs or ShipMetrics. */
type ShipCall = (
  req: { stream: string; compression: agentv1.Compression; payload: Uint8Array; drops: agentv1.DropReport },
  opts: { signal: AbortSignal; timeoutMs: number },
) => Promise<{ ackedSeq: bigint; unsettledHeld?: bigint }>;

/** What the agent's telemetry needs of its configuration (config.ts documents each option). */
export type TelemetryOptions = Pick<
  AgentConfig,
  "stateDir" | "logBufferBytes" | "metricsIntervalMs" | "metricsShipIntervalMs" | "journalUnits" | "logFileUnit" | "backoffMinMs" | "backoffMaxMs"
>;

/** Stream names the agent ships under; seqs count per (device, stream). */
export const LOG_STREAM = "logs";
export const METRICS_STREAM = "metrics";

const METRICS_BUFFER_BYTES = 16 * 1024 * 1024;
/** Log lines wait up to 200 ms for company: a burst (a service starting) goes in one call, not one per line, and `logs -f` still shows a line within a second. */
const LOG_LINGER_MS = 200;

/** How long metric samples wait to be shipped together: the option, else six samples' worth, at most a minute. */
export function metricsShipIntervalMs(opts: Pick<TelemetryOptions, "metricsIntervalMs" | "metricsShipIntervalMs">): number {
  return opts.metricsShipIntervalMs ?? Math.min(60_000, 6 * opts.metricsIntervalMs);
}

/**
 * The agent's logs and metrics: capture sources, the two durable buffers (state dir `logs/` and
 * `metrics/`), the metrics sampler and the shippers. `capture` is the API other parts of the
 * agent feed (`capture.append(unit, stream, line)`).
 */
export class AgentTelemetry {
  private readonly stop = new AbortController();
  private readonly tasks: Promise<void>[] = [];
  private readonly files: FileTail[];
  private readonly journal: JournalTail;
  private readonly logShipper: Shipper;
  private readonly metricShipper: Shipper;

  private constructor(
    readonly capture: LogCapture,
    private readonly metricsBuffer: SegmentBuffer,
    private readonly opts: TelemetryOptions,
    private readonly log: Logger,
  ) {
    const shipOpts = { batchRecords: 5000, batchBytes: 1 << 20, backoffMinMs: opts.backoffMinMs, backoffMaxMs: opts.backoffMaxMs };
    this.logShipper = new Shipper(capture.buffer, "logs", { ...shipOpts, lingerMs: LOG_LINGER_MS }, log);
    this.metricShipper = new Shipper(metricsBuffer, "metrics", { ...shipOpts, lingerMs: metricsShipIntervalMs(opts) }, log);
    this.files = opts.logFileUnit.map((item) => {
      const eq = item.indexOf("=");
      return new FileTail(capture, item.slice(0, eq), item.slice(eq + 1), log);
    });
    this.journal = new JournalTail(capture, opts.journalUnits, log);
  }

  /** Opens both buffers (recovering them after a crash). */
  static async open(opts: TelemetryOptions, log: Logger): Promise<AgentTelemetry> {
    const logs = await SegmentBuffer.open(join(opts.stateDir, "logs"), { maxBytes: opts.logBufferBytes });
    const metrics = await SegmentBuffer.open(join(opts.stateDir, "metrics"), { maxBytes: Math.min(METRICS_BUFFER_BYTES, opts.logBufferBytes) });
    if (logs.corrupted + metrics.corrupted > 0) log.warn("cut off damaged buffer tails (power loss?)", { logs: logs.corrupted, metrics: metrics.corrupted });
    const capture = new LogCapture(logs, (err) => log.warn("cannot buffer log lines", { err: (err as Error).message }));
    return new AgentTelemetry(capture, metrics, opts, log);
  }

  /** `inner`, with every line also captured into the agent's own unit. */
  logger(inner: Logger): Logger {
    return capturingLogger(inner, this.capture);
  }

  /** Starts capture sources, the sampler and the shippers. */
  start(): void {
    for (const f of this.files) f.start();
    this.journal.start();
    this.tasks.push(this.logShipper.run(this.stop.signal), this.metricShipper.run(this.stop.signal), this.sampleLoop());
  }

  /**
   * Ships over `transport` (the agent's authenticated connection), or stops shipping when
   * undefined. `reconnect` asks the agent for a new connection when the session was refused.
   */
  connect(transport: Transport | undefined, reconnect?: () => void): void {
    if (!transport) {
      this.logShipper.connect(undefined);
      this.metricShipper.connect(undefined);
      return;
    }
    const client = createClient(agentv1.TelemetryService, transport);
    // Both calls take the same request shape: a stream, a gzipped payload and the drop report.
    const sender = (stream: string, ship: ShipCall, encode: (records: BufferedRecord[]) => Uint8Array): SendBatch =>
      async (records, drops, signal) => {
        const payload = await gzip(encode(records), { level: 3 });
        const res = await ship({ stream, compression: agentv1.Compression.GZIP, payload, drops: dropReport(drops) }, { signal, timeoutMs: 30_000 });
        return { acked: Number(res.ackedSeq), ...(res.unsettledHeld === undefined ? {} : { unsettledHeld: Number(res.unsettledHeld) }) };
      };
    this.logShipper.connect(
      sender(LOG_STREAM, (req, o) => client.shipLogs(req, o), (records) => toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, { records: records.map(toLogRecord) }))),
      reconnect,
    );
    this.metricShipper.connect(
      sender(METRICS_STREAM, (req, o) => client.shipMetrics(req, o), (records) => toBinary(agentv1.MetricSamplesSchema, create(agentv1.MetricSamplesSchema, { samples: records.map(toSample) }))),
      reconnect,
    );
  }

  /** Stops everything and flushes both buffers to disk. */
  async close(): Promise<void> {
    this.stop.abort();
    await Promise.allSettled([...this.files.map((f) => f.close()), this.journal.close()]);
    await Promise.allSettled(this.tasks);
    this.logShipper.close();
    this.metricShipper.close();
    await this.capture.flush().catch(() => {});
    await this.capture.buffer.close();
    await this.metricsBuffer.close();
  }

  private async sampleLoop(): Promise<void> {
    const sampler = new SystemSampler([...new Set(["/", this.opts.stateDir])]);
    // A first, short interval gives CPU utilization something to measure against.
    await sleep(Math.min(1000, this.opts.metricsIntervalMs), this.stop.signal);
    while (!this.stop.signal.aborted) {
      try {
        const points = await sampler.sample();
        const sample = create(agentv1.MetricSampleSchema, { points: points.map((p) => create(agentv1.MetricPointSchema, p)) });
        await this.metricsBuffer.append([{ time: Date.now(), body: toBinary(agentv1.MetricSampleSchema, sample) }]);
      } catch (err) {
        this.log.warn("cannot sample metrics", { err: (err as Error).message });
      }
      await sleep(this.opts.metricsIntervalMs, this.stop.signal);
    }
  }
}

function dropReport(d: DropStats): agentv1.DropReport {
  return create(agentv1.DropReportSchema, {
    droppedThrough: BigInt(d.droppedThrough),
    droppedTotal: BigInt(d.droppedTotal),
    unsettled: (d.unsettled ?? []).map((r) => ({ firstSeq: BigInt(r.from), lastSeq: BigInt(r.to) })),
  });
}

function toLogRecord(r: BufferedRecord): agentv1.LogRecord {
  const rec = fromBinary(agentv1.LogRecordSchema, r.body);
  rec.seq = BigInt(r.seq);
  rec.timeUnixMs = BigInt(r.time);
  return rec;
}

function toSample(r: BufferedRecord): agentv1.MetricSample {
  const s = fromBinary(agentv1.MetricSampleSchema, r.body);
  s.seq = BigInt(r.seq);
  s.timeUnixMs = BigInt(r.time);
  return s;
}
