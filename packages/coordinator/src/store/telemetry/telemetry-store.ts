import { sql, type Kysely, type Transaction } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import type { Database } from "../schema/schema.ts";

/** A log line as the agent shipped it. */
export interface LogRecordInput {
  seq: number;
  time: number;
  unit: string;
  source: string;
  line: string;
}

/** A stored log line. */
export interface LogLineRow extends LogRecordInput {
  orgId: string;
  deviceId: string;
  stream: string;
}

/** One metric value (OpenTelemetry system metrics names). */
export interface MetricPointRow {
  name: string;
  value: number;
  attributes: Record<string, string>;
  unit: string;
  monotonic: boolean;
}

export interface MetricSampleInput {
  seq: number;
  time: number;
  points: MetricPointRow[];
}

export interface MetricSampleRow extends MetricSampleInput {
  orgId: string;
  deviceId: string;
}

/** What the agent reported its buffer dropped (see agent/v1/telemetry.proto DropReport). */
export interface Drops {
  droppedThrough: number;
  droppedTotal: number;
}

export interface LogQuery {
  /** Only these devices; undefined: every device of the organization. */
  deviceIds?: string[];
  unit?: string;
  /** Only lines captured at or after this time, ms. */
  since?: number;
  /** Case-insensitive (ASCII) substring. */
  grep?: string;
  /** The newest `limit` matching lines, returned oldest first. */
  limit: number;
}

/**
 * Logs and metrics of devices. Ingest is idempotent by (device, stream, seq) and answers the
 * highest contiguous seq stored, so agents may resend freely. Reads are scoped by organization.
 */
export interface TelemetryStore {
  /**
   * Stores the records not stored before, in one transaction, and returns the stream's highest
   * contiguous seq (counting seqs the agent reports dropped) and the records that were new.
   * `records` must be in ascending seq order.
   */
  ingestLogs(orgId: string, deviceId: string, stream: string, records: LogRecordInput[], drops: Drops): Promise<{ ackedSeq: number; added: LogLineRow[] }>;
  /** The same for metric samples. */
  ingestMetrics(orgId: string, deviceId: string, stream: string, samples: MetricSampleInput[], drops: Drops): Promise<{ ackedSeq: number; added: MetricSampleRow[] }>;
  queryLogs(orgId: string, q: LogQuery): Promise<LogLineRow[]>;
  /** The newest `limit` samples of a device, oldest first. */
  recentMetrics(orgId: string, deviceId: string, limit: number): Promise<MetricSampleRow[]>;
  /** The newest sample of every device that has one (all organizations; for /metrics). */
  latestMetrics(): Promise<MetricSampleRow[]>;
  /** Dropped totals by stream for one device. */
  dropped(orgId: string, deviceId: string): Promise<Record<string, number>>;
  /** Dropped totals by stream over every device (for /metrics). */
  droppedTotals(): Promise<Record<string, number>>;
  /**
   * Deletes log lines and samples older than `before`, then the oldest log lines until the
   * lines' approximate size is within `maxLogBytes`. Returns how many lines were deleted.
   */
  prune(before: number, maxLogBytes: number): Promise<number>;
}

const num = (v: number | string | bigint): number => Number(v);
const CHUNK = 1000;

/** Escapes LIKE wildcards; `\` is the escape character. */
function likePattern(text: string): string {
  return `%${text.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export class KyselyTelemetryStore implements TelemetryStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {}

  private async beginStream(trx: Transaction<Database>, orgId: string, deviceId: string, stream: string, drops: Drops) {
    await trx
      .insertInto("telemetry_streams")
      .values({ device_id: deviceId, stream, org_id: orgId, acked_seq: 0, dropped_total: 0 })
      .onConflict((oc) => oc.columns(["device_id", "stream"]).doNothing())
      .execute();
    let q = trx.selectFrom("telemetry_streams").select(["acked_seq", "dropped_total"]).where("device_id", "=", deviceId).where("stream", "=", stream);
    if (this.adapter.rowLocks) q = q.forUpdate();
    const row = await q.executeTakeFirstOrThrow();
    return { acked: num(row.acked_seq), droppedTotal: Math.max(num(row.dropped_total), drops.droppedTotal) };
  }

  private async endStream(trx: Transaction<Database>, deviceId: string, stream: string, start: number, seqs: number[], droppedTotal: number): Promise<number> {
    let acked = start;
    for (const s of seqs) {
      if (s <= acked) continue;
      if (s !== acked + 1) break;
      acked = s;
    }
    await trx.updateTable("telemetry_streams").set({ acked_seq: acked, dropped_total: droppedTotal }).where("device_id", "=", deviceId).where("stream", "=", stream).execute();
    return acked;
  }

  ingestLogs(orgId: string, deviceId: string, stream: string, records: LogRecordInput[], drops: Drops) {
    return this.db.transaction().execute(async (trx) => {
      const { acked, droppedTotal } = await this.beginStream(trx, orgId, deviceId, stream, drops);
      const start = Math.max(acked, drops.droppedThrough);
      const fresh = records.filter((r) => r.seq > acked);
      const inserted = new Set<number>();
      for (let i = 0; i < fresh.length; i += CHUNK) {
        const rows = fresh.slice(i, i + CHUNK).map((r) => ({
          org_id: orgId,
          device_id: deviceId,
          stream,
          seq: r.seq,
          time: r.time,
          unit: r.unit,
          source: r.source,
          line: r.line,
          bytes: r.line.length + r.unit.length + 64,
        }));
        const res = await trx
          .insertInto("log_records")
          .values(rows)
          .onConflict((oc) => oc.columns(["device_id", "stream", "seq"]).doNothing())
          .returning("seq")
          .execute();
        for (const r of res) inserted.add(num(r.seq));
      }
      const ackedSeq = await this.endStream(trx, deviceId, stream, start, records.map((r) => r.seq), droppedTotal);
      const added = fresh.filter((r) => inserted.has(r.seq)).map((r) => ({ ...r, orgId, deviceId, stream }));
      return { ackedSeq, added };
    });
  }

  ingestMetrics(orgId: string, deviceId: string, stream: string, samples: MetricSampleInput[], drops: Drops) {
    return this.db.transaction().execute(async (trx) => {
      const { acked, droppedTotal } = await this.beginStream(trx, orgId, deviceId, stream, drops);
      const start = Math.max(acked, drops.droppedThrough);
      const fresh = samples.filter((s) => s.seq > acked);
      const inserted = new Set<number>();
      for (let i = 0; i < fresh.length; i += CHUNK) {
        const rows = fresh.slice(i, i + CHUNK).map((s) => ({ org_id: orgId, device_id: deviceId, stream, seq: s.seq, time: s.time, points: JSON.stringify(s.points) }));
        const res = await trx
          .insertInto("metric_samples")
          .values(rows)
          .onConflict((oc) => oc.columns(["device_id", "stream", "seq"]).doNothing())
          .returning("seq")
          .execute();
        for (const r of res) inserted.add(num(r.seq));
      }
      const ackedSeq = await this.endStream(trx, deviceId, stream, start, samples.map((s) => s.seq), droppedTotal);
      return { ackedSeq, added: fresh.filter((s) => inserted.has(s.seq)).map((s) => ({ ...s, orgId, deviceId })) };
    });
  }

  async queryLogs(orgId: string, q: LogQuery): Promise<LogLineRow[]> {
    if (q.deviceIds?.length === 0) return [];
    let query = this.db.selectFrom("log_records").selectAll().where("org_id", "=", orgId);
    if (q.deviceIds) query = query.where("device_id", "in", q.deviceIds);
    if (q.unit) query = query.where("unit", "=", q.unit);
    if (q.since) query = query.where("time", ">=", q.since);
    if (q.grep) query = query.where(sql<boolean>`lower(line) like ${likePattern(q.grep)} escape '\\'`);
    // One device: capture order is seq order, whatever its clock did. Several: by time.
    const ordered = q.deviceIds?.length === 1 ? query.orderBy("seq", "desc") : query.orderBy("time", "desc").orderBy("device_id", "desc").orderBy("seq", "desc");
    const rows = await ordered.limit(q.limit).execute();
    return rows.reverse().map((r) => ({
      orgId: r.org_id,
      deviceId: r.device_id,
      stream: r.stream,
      seq: num(r.seq),
      time: num(r.time),
      unit: r.unit,
      source: r.source,
      line: r.line,
    }));
  }

  async recentMetrics(orgId: string, deviceId: string, limit: number): Promise<MetricSampleRow[]> {
    const rows = await this.db
      .selectFrom("metric_samples")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("device_id", "=", deviceId)
      .orderBy("time", "desc")
      .orderBy("seq", "desc")
      .limit(limit)
      .execute();
    return rows.reverse().map(toSample);
  }

  async latestMetrics(): Promise<MetricSampleRow[]> {
    const rows = await this.db
      .selectFrom("metric_samples as m")
      .selectAll("m")
      .where("m.seq", "=", (eb) => eb.selectFrom("metric_samples as n").select((e) => e.fn.max("n.seq").as("s")).whereRef("n.device_id", "=", "m.device_id").whereRef("n.stream", "=", "m.stream"))
      .execute();
    return rows.map(toSample);
  }

  async dropped(orgId: string, deviceId: string): Promise<Record<string, number>> {
    const rows = await this.db.selectFrom("telemetry_streams").select(["stream", "dropped_total"]).where("org_id", "=", orgId).where("device_id", "=", deviceId).execute();
    return Object.fromEntries(rows.map((r) => [r.stream, num(r.dropped_total)]));
  }

  async droppedTotals(): Promise<Record<string, number>> {
    const rows = await this.db
      .selectFrom("telemetry_streams")
      .select((eb) => ["stream", eb.fn.sum<number | string>("dropped_total").as("total")])
      .groupBy("stream")
      .execute();
    return Object.fromEntries(rows.map((r) => [r.stream, num(r.total ?? 0)]));
  }

  async prune(before: number, maxLogBytes: number): Promise<number> {
    let deleted = num((await this.db.deleteFrom("log_records").where("time", "<", before).executeTakeFirst()).numDeletedRows);
    await this.db.deleteFrom("metric_samples").where("time", "<", before).execute();
    for (let round = 0; round < 8; round++) {
      const t = await this.db
        .selectFrom("log_records")
        .select((eb) => [eb.fn.sum<number | string>("bytes").as("bytes"), eb.fn.countAll<number | string>().as("n")])
        .executeTakeFirst();
      const total = num(t?.bytes ?? 0);
      const n = num(t?.n ?? 0);
      if (total <= maxLogBytes || n === 0) break;
      // Delete the oldest share that brings the total to 90% of the bound.
      const k = Math.min(n - 1, Math.ceil((n * (total - maxLogBytes * 0.9)) / total));
      const cut = await this.db.selectFrom("log_records").select("time").orderBy("time").limit(1).offset(Math.max(0, k)).executeTakeFirst();
      if (!cut) break;
      deleted += num((await this.db.deleteFrom("log_records").where("time", "<=", num(cut.time)).executeTakeFirst()).numDeletedRows);
    }
    return deleted;
  }
}

function toSample(r: Database["metric_samples"]): MetricSampleRow {
  return { orgId: r.org_id, deviceId: r.device_id, seq: num(r.seq), time: num(r.time), points: JSON.parse(r.points) as MetricPointRow[] };
}
