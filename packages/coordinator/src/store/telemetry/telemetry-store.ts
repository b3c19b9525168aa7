import { sql, type Kysely, type Transaction } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import { GroupCommit } from "../group-commit.ts";
import type { Database } from "../schema/schema.ts";
import { logBytes } from "./log-insert.ts";

/** A log line as the agent shipped it. */
export interface LogRecordInput {
  seq: number;
  /** Capture time, ms, as the coordinator bounded the device's claim. */
  time: number;
  unit: string;
  source: string;
  line: string;
  /** The device's claimed capture time, where it differs from `time`. */
  claimedTime?: number;
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
  /** Sample time, ms, bounded like LogRecordInput.time. */
  time: number;
  points: MetricPointRow[];
  claimedTime?: number;
}

export interface MetricSampleRow extends MetricSampleInput {
  orgId: string;
  deviceId: string;
}

/** What the agent reported its buffer dropped (see agent/v1/telemetry.proto DropReport). */
export interface Drops {
  droppedThrough: number;
  droppedTotal: number;
  /** Seqs the agent cannot settle itself (their batch's answer was lost): counted here, see DropReport. */
  unsettled?: { from: number; to: number }[];
}

/** What one ingest did: the stream's contiguous seq, the new records, and how many unsettled seqs it holds. */
export interface Ingested<T> {
  ackedSeq: number;
  added: T[];
  /** Set when the drop report had unsettled ranges. */
  unsettledHeld?: number;
}

/** What an organization's devices have stored, in approximate bytes. */
export interface TelemetryUsage {
  logBytes: number;
  metricBytes: number;
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
  /**
   * Instead: the oldest `limit` matching lines that come after this line, in the same order
   * (`{}`: from the first). A page ends where the next begins, whatever arrives meanwhile.
   */
  after?: LogCursor;
}

/** Where a page of lines ended: one device's lines go by seq, several devices' by time, device, seq. */
export interface LogCursor {
  time?: number;
  deviceId?: string;
  seq?: number;
}

/**
 * Logs and metrics of devices. Ingest is idempotent by (device, stream, seq) and answers the
 * highest contiguous seq stored, so agents may resend freely. Reads are scoped by organization.
 */
export interface TelemetryStore {
  /**
   * Stores the records not stored before, in one transaction, and returns the stream's highest
   * contiguous seq (counting seqs the agent reports dropped) and the records that were new.
   * `records` must be in ascending seq order. `receivedAt` (the coordinator's clock, ms) is what
   * retention counts from. Costs O(records): the stream's own row counts the bytes stored.
   * Unsettled seqs in `drops` that the stream does not hold count as dropped (an index range
   * count, at most 16 ranges).
   */
  ingestLogs(orgId: string, deviceId: string, stream: string, records: LogRecordInput[], drops: Drops, receivedAt?: number): Promise<Ingested<LogLineRow>>;
  /** The same for metric samples. */
  ingestMetrics(orgId: string, deviceId: string, stream: string, samples: MetricSampleInput[], drops: Drops, receivedAt?: number): Promise<Ingested<MetricSampleRow>>;
  queryLogs(orgId: string, q: LogQuery): Promise<LogLineRow[]>;
  /** The newest `limit` samples of a device, oldest first. */
  recentMetrics(orgId: string, deviceId: string, limit: number): Promise<MetricSampleRow[]>;
  /** The newest sample of every device that has one (all organizations; for /metrics). */
  latestMetrics(): Promise<MetricSampleRow[]>;
  /** Dropped totals by stream for one device. */
  dropped(orgId: string, deviceId: string): Promise<Record<string, number>>;
  /** Dropped totals by stream over every device (for /metrics). */
  droppedTotals(): Promise<Record<string, number>>;
  /** The bytes the organization's lines and samples take now, as the streams count them. */
  usage(orgId: string): Promise<TelemetryUsage>;
  /**
   * For each organization: deletes the lines and samples the coordinator received before
   * `before`, then, while the organization's lines (and, apart, its samples) exceed about
   * `maxBytesPerOrg`, the earliest received of them, down to 90% of it. Times a device claims
   * play no part, and one organization's volume never deletes another's. Works in chunks of a
   * few thousand rows, each its own short transaction, yielding to the event loop between them.
   * Returns how many lines were deleted. `cutoffs` overrides `before` per organization and table
   * (an organization's own retention).
   */
  prune(before: number, maxBytesPerOrg: number, cutoffs?: ReadonlyMap<string, { logs: number; metrics: number }>): Promise<number>;
  /** The organization's own retention, ms (0: the coordinator's default). */
  getRetention(orgId: string): Promise<TelemetryRetention>;
  setRetention(orgId: string, retention: TelemetryRetention): Promise<void>;
  /** Every organization that set its own retention. */
  listRetention(): Promise<Map<string, TelemetryRetention>>;
}

/** How long an organization keeps its device logs and metric samples, ms; 0: the coordinator's default. */
export interface TelemetryRetention {
  logsMs: number;
  metricsMs: number;
}

const num = (v: number | string | bigint): number => Number(v);
/** Metric samples per INSERT. */
const CHUNK = 1000;
/** Rows deleted per pruning step. */
const PRUNE_CHUNK = 2000;
/** What pruning keeps of an organization over its bound: 90%, so it does not run at every batch. */
const PRUNE_TO = 0.9;

/**
 * How long a light telemetry batch waits for others to share its commit: idle devices' batches
 * then go to disk in tens per commit rather than one each, and a durable SQLite commit (an fsync
 * that blocks the event loop) comes at most ten times a second for them. Acknowledgements wait
 * as long; a heavy batch (a backlog) goes at once.
 */
const INGEST_LINGER_MS = 100;

type TelemetryTable = "log_records" | "metric_samples";
const COUNTER = { log_records: "log_bytes", metric_samples: "metric_bytes" } as const;

/** Escapes LIKE wildcards; `\` is the escape character. */
function likePattern(text: string): string {
  return `%${text.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export class KyselyTelemetryStore implements TelemetryStore {
  /** Devices' log and metric batches share commits. */
  readonly ingests: GroupCommit;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {
    this.ingests = new GroupCommit(db, 256, INGEST_LINGER_MS);
  }

  private async beginStream(trx: Transaction<Database>, orgId: string, deviceId: string, stream: string, drops: Drops) {
    const read = () => {
      let q = trx.selectFrom("telemetry_streams").select(["acked_seq", "dropped_total"]).where("device_id", "=", deviceId).where("stream", "=", stream);
      if (this.adapter.rowLocks) q = q.forUpdate();
      return q.executeTakeFirst();
    };
    // The stream's row exists after its first batch: read first, and write it only when missing
    // (one statement per batch instead of two).
    let row = await read();
    if (!row) {
      await trx
        .insertInto("telemetry_streams")
        .values({ device_id: deviceId, stream, org_id: orgId, acked_seq: 0, dropped_total: 0, log_bytes: 0, metric_bytes: 0 })
        .onConflict((oc) => oc.columns(["device_id", "stream"]).doNothing())
        .execute();
      row = await read();
      if (!row) throw new Error(`telemetry stream ${stream} of ${deviceId} vanished while it was written`);
    }
    return { acked: num(row.acked_seq), droppedTotal: Math.max(num(row.dropped_total), drops.droppedTotal) };
  }

  private async endStream(
    trx: Transaction<Database>,
    deviceId: string,
    stream: string,
    start: number,
    seqs: number[],
    droppedTotal: number,
    stored: { table: TelemetryTable; bytes: number },
  ): Promise<number> {
    let acked = start;
    for (const s of seqs) {
      if (s <= acked) continue;
      if (s !== acked + 1) break;
      acked = s;
    }
    const counter = COUNTER[stored.table];
    await trx
      .updateTable("telemetry_streams")
      .set((eb) => ({ acked_seq: acked, dropped_total: droppedTotal, [counter]: eb(counter, "+", stored.bytes) }))
      .where("device_id", "=", deviceId)
      .where("stream", "=", stream)
      .execute();
    return acked;
  }

  /**
   * How many seqs of `drops.unsettled` the stream holds in `table`, and the drop report with those
   * it does not hold counted in droppedTotal.
   */
  private async settle(trx: Transaction<Database>, table: TelemetryTable, deviceId: string, stream: string, drops: Drops): Promise<{ drops: Drops; held?: number }> {
    const ranges = drops.unsettled ?? [];
    if (ranges.length === 0) return { drops };
    let held = 0;
    let seqs = 0;
    for (const r of ranges) {
      const row = await trx
        .selectFrom(table)
        .select((eb) => eb.fn.countAll<number | string | bigint>().as("n"))
        .where("device_id", "=", deviceId)
        .where("stream", "=", stream)
        .where("seq", ">=", r.from)
        .where("seq", "<=", r.to)
        .executeTakeFirstOrThrow();
      held += num(row.n);
      seqs += r.to - r.from + 1;
    }
    return { drops: { ...drops, droppedTotal: drops.droppedTotal + seqs - held }, held };
  }

  ingestLogs(orgId: string, deviceId: string, stream: string, records: LogRecordInput[], drops: Drops, receivedAt = Date.now()) {
    return this.ingests.run(async (trx): Promise<Ingested<LogLineRow>> => {
      const settled = await this.settle(trx, "log_records", deviceId, stream, drops);
      const { acked, droppedTotal } = await this.beginStream(trx, orgId, deviceId, stream, settled.drops);
      const start = Math.max(acked, drops.droppedThrough);
      const fresh = records.filter((r) => r.seq > acked);
      const stored = await this.adapter.insertLogLines(trx, { orgId, deviceId, stream, receivedAt, records: fresh });
      // Usually every fresh line is new; a resend after a gap finds some stored already.
      const inserted = stored.length === fresh.length ? undefined : new Set(stored);
      const added: LogLineRow[] = [];
      let bytes = 0;
      for (const r of fresh) {
        if (inserted && !inserted.has(r.seq)) continue;
        // Spelled out: object spread costs microseconds a line here.
        const l: LogLineRow = { orgId, deviceId, stream, seq: r.seq, time: r.time, unit: r.unit, source: r.source, line: r.line };
        if (r.claimedTime !== undefined) l.claimedTime = r.claimedTime;
        added.push(l);
        bytes += logBytes(r);
      }
      const ackedSeq = await this.endStream(trx, deviceId, stream, start, records.map((r) => r.seq), droppedTotal, { table: "log_records", bytes });
      return { ackedSeq, added, ...(settled.held === undefined ? {} : { unsettledHeld: settled.held }) };
    }, records.length);
  }

  ingestMetrics(orgId: string, deviceId: string, stream: string, samples: MetricSampleInput[], drops: Drops, receivedAt = Date.now()) {
    return this.ingests.run(async (trx): Promise<Ingested<MetricSampleRow>> => {
      const settled = await this.settle(trx, "metric_samples", deviceId, stream, drops);
      const { acked, droppedTotal } = await this.beginStream(trx, orgId, deviceId, stream, settled.drops);
      const start = Math.max(acked, drops.droppedThrough);
      const fresh = samples.filter((s) => s.seq > acked);
      const inserted = new Map<number, number>();
      for (let i = 0; i < fresh.length; i += CHUNK) {
        const rows = fresh.slice(i, i + CHUNK).map((s) => {
          const points = JSON.stringify(s.points);
          return { org_id: orgId, device_id: deviceId, stream, seq: s.seq, time: s.time, points, bytes: points.length + 64, received_at: receivedAt, claimed_time: s.claimedTime ?? null };
        });
        const res = await trx
          .insertInto("metric_samples")
          .values(rows)
          .onConflict((oc) => oc.columns(["device_id", "stream", "seq"]).doNothing())
          .returning(["seq", "bytes"])
          .execute();
        for (const r of res) inserted.set(num(r.seq), num(r.bytes));
      }
      const bytes = [...inserted.values()].reduce((n, b) => n + b, 0);
      const ackedSeq = await this.endStream(trx, deviceId, stream, start, samples.map((s) => s.seq), droppedTotal, { table: "metric_samples", bytes });
      const added = fresh.filter((s) => inserted.has(s.seq)).map((s) => ({ ...s, orgId, deviceId }));
      return { ackedSeq, added, ...(settled.held === undefined ? {} : { unsettledHeld: settled.held }) };
    }, samples.length);
  }

  async queryLogs(orgId: string, q: LogQuery): Promise<LogLineRow[]> {
    if (q.deviceIds?.length === 0) return [];
    let query = this.db.selectFrom("log_records").selectAll().where("org_id", "=", orgId);
    if (q.deviceIds) query = query.where("device_id", "in", q.deviceIds);
    if (q.unit) query = query.where("unit", "=", q.unit);
    if (q.since) query = query.where("time", ">=", q.since);
    if (q.grep) query = query.where(sql<boolean>`lower(line) like ${likePattern(q.grep)} escape '\\'`);
    // One device: capture order is seq order, whatever its clock did. Several: by time.
    const one = q.deviceIds?.length === 1;
    let rows;
    if (q.after) {
      const { time, deviceId, seq } = q.after;
      if (seq !== undefined) {
        if (one) query = query.where("seq", ">", seq);
        else if (time !== undefined && deviceId !== undefined) {
          query = query.where((eb) =>
            eb.or([
              eb("time", ">", time),
              eb.and([eb("time", "=", time), eb("device_id", ">", deviceId)]),
              eb.and([eb("time", "=", time), eb("device_id", "=", deviceId), eb("seq", ">", seq)]),
            ]),
          );
        }
      }
      const ordered = one ? query.orderBy("seq", "asc") : query.orderBy("time", "asc").orderBy("device_id", "asc").orderBy("seq", "asc");
      rows = await ordered.limit(q.limit).execute();
    } else {
      const ordered = one ? query.orderBy("seq", "desc") : query.orderBy("time", "desc").orderBy("device_id", "desc").orderBy("seq", "desc");
      rows = (await ordered.limit(q.limit).execute()).reverse();
    }
    return rows.map((r) => ({
      orgId: r.org_id,
      deviceId: r.device_id,
      stream: r.stream,
      seq: num(r.seq),
      time: num(r.time),
      unit: r.unit,
      source: r.source,
      line: r.line,
      ...(r.claimed_time === null ? {} : { claimedTime: num(r.claimed_time) }),
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

  async usage(orgId: string): Promise<TelemetryUsage> {
    const row = await this.db
      .selectFrom("telemetry_streams")
      .select((eb) => [eb.fn.sum<number | string>("log_bytes").as("logs"), eb.fn.sum<number | string>("metric_bytes").as("metrics")])
      .where("org_id", "=", orgId)
      .executeTakeFirst();
    return { logBytes: num(row?.logs ?? 0), metricBytes: num(row?.metrics ?? 0) };
  }

  async getRetention(orgId: string): Promise<TelemetryRetention> {
    const r = await this.db.selectFrom("telemetry_retention").selectAll().where("org_id", "=", orgId).executeTakeFirst();
    return { logsMs: num(r?.log_retention_ms ?? 0), metricsMs: num(r?.metric_retention_ms ?? 0) };
  }

  async setRetention(orgId: string, r: TelemetryRetention): Promise<void> {
    const values = { org_id: orgId, log_retention_ms: r.logsMs, metric_retention_ms: r.metricsMs };
    await this.db
      .insertInto("telemetry_retention")
      .values(values)
      .onConflict((oc) => oc.column("org_id").doUpdateSet({ log_retention_ms: r.logsMs, metric_retention_ms: r.metricsMs }))
      .execute();
  }

  async listRetention(): Promise<Map<string, TelemetryRetention>> {
    const rows = await this.db.selectFrom("telemetry_retention").selectAll().execute();
    return new Map(rows.map((r) => [r.org_id, { logsMs: num(r.log_retention_ms), metricsMs: num(r.metric_retention_ms) }]));
  }

  async prune(before: number, maxBytesPerOrg: number, cutoffs?: ReadonlyMap<string, { logs: number; metrics: number }>): Promise<number> {
    // One row per organization with telemetry, summed over its streams: O(streams), not O(rows).
    const orgs = await this.db
      .selectFrom("telemetry_streams")
      .select((eb) => ["org_id", eb.fn.sum<number | string>("log_bytes").as("logs"), eb.fn.sum<number | string>("metric_bytes").as("metrics")])
      .groupBy("org_id")
      .execute();
    let deleted = 0;
    for (const org of orgs) {
      for (const table of ["log_records", "metric_samples"] as const) {
        let total = num((table === "log_records" ? org.logs : org.metrics) ?? 0);
        const step = async (olderThan: number, need: number) => {
          const d = await this.deleteEarliest(table, org.org_id, olderThan, need);
          total -= d.bytes;
          if (table === "log_records") deleted += d.rows;
          await new Promise((resolve) => setImmediate(resolve));
          return d.rows;
        };
        const own = cutoffs?.get(org.org_id);
        const cutoff = own ? (table === "log_records" ? own.logs : own.metrics) : before;
        while ((await step(cutoff, Infinity)) === PRUNE_CHUNK);
        if (total <= maxBytesPerOrg) continue;
        while (total > maxBytesPerOrg * PRUNE_TO) {
          if ((await step(Number.MAX_SAFE_INTEGER, total - maxBytesPerOrg * PRUNE_TO)) > 0) continue;
          // Nothing left to delete yet bytes counted: count the organization's streams again.
          await this.recount(table, org.org_id);
          break;
        }
      }
    }
    return deleted;
  }

  /**
   * Deletes the organization's earliest received rows of `table` received before `olderThan`,
   * up to PRUNE_CHUNK of them and no more than needed to free `need` bytes, and takes their
   * bytes off their streams' counts in the same transaction. On PostgreSQL the streams' rows are
   * locked first, in key order, as ingest locks its stream before its rows: no deadlock.
   */
  private async deleteEarliest(table: TelemetryTable, orgId: string, olderThan: number, need: number): Promise<{ rows: number; bytes: number }> {
    const candidates = await this.db
      .selectFrom(table)
      .select(["device_id", "stream", "seq", "bytes"])
      .where("org_id", "=", orgId)
      .where("received_at", "<", olderThan)
      .orderBy("received_at")
      .orderBy("seq")
      .limit(PRUNE_CHUNK)
      .execute();
    const picked: typeof candidates = [];
    let freed = 0;
    for (const c of candidates) {
      if (freed >= need) break;
      picked.push(c);
      freed += num(c.bytes);
    }
    if (picked.length === 0) return { rows: 0, bytes: 0 };
    const streams = [...new Set(picked.map((p) => JSON.stringify([p.device_id, p.stream])))].sort().map((k) => JSON.parse(k) as [string, string]);
    const counter = COUNTER[table];
    return this.db.transaction().execute(async (trx) => {
      if (this.adapter.rowLocks) {
        await trx
          .selectFrom("telemetry_streams")
          .select("device_id")
          .where((eb) => eb(eb.refTuple("device_id", "stream"), "in", streams.map(([d, s]) => eb.tuple(d, s))))
          .orderBy("device_id")
          .orderBy("stream")
          .forUpdate()
          .execute();
      }
      const gone = await trx
        .deleteFrom(table)
        .where((eb) => eb(eb.refTuple("device_id", "stream", "seq"), "in", picked.map((p) => eb.tuple(p.device_id, p.stream, p.seq))))
        .returning(["device_id", "stream", "bytes"])
        .execute();
      const byStream = new Map<string, number>();
      for (const g of gone) {
        const key = JSON.stringify([g.device_id, g.stream]);
        byStream.set(key, (byStream.get(key) ?? 0) + num(g.bytes));
      }
      let bytes = 0;
      for (const [key, n] of byStream) {
        const [deviceId, stream] = JSON.parse(key) as [string, string];
        await trx
          .updateTable("telemetry_streams")
          .set((eb) => ({ [counter]: eb(counter, "-", n) }))
          .where("device_id", "=", deviceId)
          .where("stream", "=", stream)
          .execute();
        bytes += n;
      }
      return { rows: gone.length, bytes };
    });
  }

  /** Sets the organization's stream counts of `table` to what its rows take: the counts' own repair. */
  private async recount(table: TelemetryTable, orgId: string): Promise<void> {
    const counter = COUNTER[table];
    await this.db
      .updateTable("telemetry_streams")
      .set({
        [counter]: sql<number>`(select coalesce(sum(r.bytes), 0) from ${sql.table(table)} r where r.device_id = telemetry_streams.device_id and r.stream = telemetry_streams.stream)`,
      })
      .where("org_id", "=", orgId)
      .execute();
  }
}

function toSample(r: Database["metric_samples"]): MetricSampleRow {
  return { orgId: r.org_id, deviceId: r.device_id, seq: num(r.seq), time: num(r.time), points: JSON.parse(r.points) as MetricPointRow[] };
}
