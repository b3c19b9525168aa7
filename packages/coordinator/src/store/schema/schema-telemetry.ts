/** Tables of logs and metrics (migration 0005_telemetry), as Kysely sees them. */
export interface TelemetryTables {
  /** One row per log line; (device_id, stream, seq) is unique, so a resent line is stored once. */
  log_records: {
    org_id: string;
    device_id: string;
    stream: string;
    seq: number;
    /** Capture time on the device, ms. */
    time: number;
    unit: string;
    source: string;
    line: string;
    /** Approximate storage cost, for the size bound. */
    bytes: number;
  };
  /** One row per metric sample; `points` is JSON: [{name, value, attributes, unit, monotonic}]. */
  metric_samples: {
    org_id: string;
    device_id: string;
    stream: string;
    seq: number;
    time: number;
    points: string;
  };
  /** Per (device, stream): the highest contiguous seq stored, and what the agent reported dropped. */
  telemetry_streams: {
    device_id: string;
    stream: string;
    org_id: string;
    acked_seq: number;
    dropped_total: number;
  };
}
