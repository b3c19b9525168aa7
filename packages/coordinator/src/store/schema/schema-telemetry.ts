/** Tables of logs and metrics (migrations 0005_telemetry, 0011_telemetry_limits), as Kysely sees them. */
export interface TelemetryTables {
  /** One row per log line; (device_id, stream, seq) is unique, so a resent line is stored once. */
  log_records: {
    org_id: string;
    device_id: string;
    stream: string;
    seq: number;
    /** Capture time on the device, ms, bounded by the coordinator (see claimed_time). */
    time: number;
    unit: string;
    source: string;
    line: string;
    /** Approximate storage cost, for the size bound. */
    bytes: number;
    /** When the coordinator stored the line, by its own clock, ms: retention goes by this. */
    received_at: number;
    /** The capture time the device claimed, where the coordinator bounded it; null: `time` is it. */
    claimed_time: number | null;
  };
  /** One row per metric sample; `points` is JSON: [{name, value, attributes, unit, monotonic}]. */
  metric_samples: {
    org_id: string;
    device_id: string;
    stream: string;
    seq: number;
    /** Sample time on the device, ms, bounded like log_records.time. */
    time: number;
    points: string;
    /** Approximate storage cost, for the size bound. */
    bytes: number;
    received_at: number;
    claimed_time: number | null;
  };
  /**
   * Per (device, stream): the highest contiguous seq stored, what the agent reported dropped,
   * and the bytes of its lines and samples stored now (kept in step by ingest and pruning).
   */
  telemetry_streams: {
    device_id: string;
    stream: string;
    org_id: string;
    acked_seq: number;
    dropped_total: number;
    log_bytes: number;
    metric_bytes: number;
  };
}
