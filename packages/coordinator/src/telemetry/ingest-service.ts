import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { agentv1 } from "@flotilla/protocol";
import { deviceOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { DeviceRow, LogLineRow, LogRecordInput, MetricPointRow } from "../store/index.ts";
import type { TelemetryCounters } from "./counters.ts";
import type { FedLine, LogFeed } from "./feed.ts";
import type { OtlpExporter } from "./otlp.ts";
import { decodeLogRecords, decodeMetricSamples } from "./wire.ts";
import { boundTime, checkDrops, checkSeqs, checkTime, inflate, MAX_LINE_CHARS, STREAM_RE, UNIT_RE } from "./validate.ts";

/** What the ingest service shares with the rest of the coordinator's telemetry. */
export interface IngestDeps {
  feed: LogFeed;
  counters: TelemetryCounters;
  otlp: OtlpExporter | undefined;
}

function decode<T>(what: string, parse: () => T): T {
  try {
    return parse();
  } catch {
    throw new ConnectError(`payload is not a valid ${what} message`, Code.InvalidArgument);
  }
}

/** The time to store for a device's claim, and the claim where the two differ. */
function claim(timeUnixMs: bigint, receivedAt: number): { time: number; claimedTime?: number } {
  const claimed = checkTime(timeUnixMs);
  const time = boundTime(claimed, receivedAt);
  return time === claimed ? { time } : { time, claimedTime: claimed };
}

/** The stored lines as followers receive them, with their device's name. */
function fed(lines: LogLineRow[], deviceName: string): FedLine[] {
  const out: FedLine[] = new Array(lines.length);
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    const f: FedLine = { orgId: l.orgId, deviceId: l.deviceId, stream: l.stream, seq: l.seq, time: l.time, unit: l.unit, source: l.source, line: l.line, deviceName };
    if (l.claimedTime !== undefined) f.claimedTime = l.claimedTime;
    out[i] = f;
  }
  return out;
}

/**
 * The agent-facing TelemetryService: validates a batch completely (a refused batch stores
 * nothing), stores it idempotently and answers the highest contiguous seq.
 */
export function ingestService(ctx: ServiceContext, deps: IngestDeps): ServiceImpl<typeof agentv1.TelemetryService> {
  const { store } = ctx;

  /** The calling device, as the authorization read it for this call (no second read). */
  function device(hctx: HandlerContext, stream: string): DeviceRow {
    if (!STREAM_RE.test(stream)) throw new ConnectError("stream must match [a-z0-9_-]{1,64}", Code.InvalidArgument);
    const { row } = deviceOf(hctx);
    if (row.lifecycle !== "approved") {
      throw new ConnectError(`device is ${row.lifecycle}: telemetry is taken from approved devices only`, Code.FailedPrecondition);
    }
    return row;
  }

  const refused = <T>(fn: () => Promise<T>): Promise<T> =>
    fn().catch((err: unknown) => {
      deps.counters.refusedBatches++;
      throw err;
    });

  return {
    shipLogs: (req, hctx) =>
      refused(async () => {
        const row = device(hctx, req.stream);
        const payload = await inflate(req.compression, req.payload);
        const records = decode("LogRecords", () => decodeLogRecords(payload));
        const seqs = checkSeqs(records.map((r) => r.seq));
        const drops = checkDrops(req.drops);
        const receivedAt = Date.now();
        // One pass, one object per line: object spread costs microseconds a line here.
        const input: LogRecordInput[] = new Array(records.length);
        let lastUnit = "";
        for (let i = 0; i < records.length; i++) {
          const r = records[i]!;
          // A batch is mostly one unit: its name is checked once per run of equal names.
          if (r.unit !== lastUnit) {
            if (!UNIT_RE.test(r.unit)) throw new ConnectError(`invalid unit name ${JSON.stringify(r.unit.slice(0, 140))}`, Code.InvalidArgument);
            lastUnit = r.unit;
          }
          if (r.source.length > 32) throw new ConnectError("source longer than 32 characters", Code.InvalidArgument);
          if (r.line.length > MAX_LINE_CHARS) throw new ConnectError(`line longer than ${MAX_LINE_CHARS} characters`, Code.InvalidArgument);
          const claimed = checkTime(r.timeUnixMs);
          const time = boundTime(claimed, receivedAt);
          const rec: LogRecordInput = { seq: seqs[i]!, time, unit: r.unit, source: r.source, line: r.line };
          if (time !== claimed) rec.claimedTime = claimed;
          input[i] = rec;
        }
        const { ackedSeq, added, unsettledHeld } = await store.telemetry.ingestLogs(row.orgId, row.id, req.stream, input, drops, receivedAt);
        deps.counters.logBatches++;
        deps.counters.logLines += added.length;
        deps.counters.logLinesDuplicate += input.length - added.length;
        if (added.length > 0 && deps.feed.wants(row.orgId)) deps.feed.publish(row.orgId, fed(added, row.name));
        return { ackedSeq: BigInt(ackedSeq), ...held(unsettledHeld) };
      }),

    shipMetrics: (req, hctx) =>
      refused(async () => {
        const row = device(hctx, req.stream);
        const payload = await inflate(req.compression, req.payload);
        const samples = decode("MetricSamples", () => decodeMetricSamples(payload));
        const seqs = checkSeqs(samples.map((s) => s.seq));
        const drops = checkDrops(req.drops);
        const receivedAt = Date.now();
        const input = samples.map((s, i) => {
          if (s.points.length > 1000) throw new ConnectError("at most 1000 points per sample", Code.InvalidArgument);
          const points: MetricPointRow[] = s.points.map((p) => {
            if (!/^[a-z][a-z0-9_.]{0,127}$/.test(p.name)) throw new ConnectError(`invalid metric name ${JSON.stringify(p.name.slice(0, 140))}`, Code.InvalidArgument);
            const attrs = Object.entries(p.attributes);
            if (attrs.length > 16 || attrs.some(([k, v]) => !/^[a-z][a-z0-9_.]{0,63}$/.test(k) || v.length > 256)) {
              throw new ConnectError(`invalid attributes on ${p.name}`, Code.InvalidArgument);
            }
            if (!Number.isFinite(p.value) || p.unit.length > 32) throw new ConnectError(`invalid value or unit on ${p.name}`, Code.InvalidArgument);
            return { name: p.name, value: p.value, attributes: { ...p.attributes }, unit: p.unit, monotonic: p.monotonic };
          });
          return { seq: seqs[i]!, ...claim(s.timeUnixMs, receivedAt), points };
        });
        const { ackedSeq, added, unsettledHeld } = await store.telemetry.ingestMetrics(row.orgId, row.id, req.stream, input, drops, receivedAt);
        deps.counters.metricBatches++;
        deps.counters.metricSamples += added.length;
        deps.otlp?.enqueue(row, added);
        return { ackedSeq: BigInt(ackedSeq), ...held(unsettledHeld) };
      }),
  };
}

/** The response's unsettled_held: present only when the request had unsettled ranges. */
function held(n: number | undefined): { unsettledHeld?: bigint } {
  return n === undefined ? {} : { unsettledHeld: BigInt(n) };
}
