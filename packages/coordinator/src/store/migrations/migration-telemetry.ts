import type { Kysely, Migration } from "kysely";

/** 0005_telemetry: log lines, metric samples and per-stream delivery state. Both dialects. */
export const telemetryMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("log_records")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("device_id", "text", (c) => c.notNull())
      .addColumn("stream", "text", (c) => c.notNull())
      .addColumn("seq", "bigint", (c) => c.notNull())
      .addColumn("time", "bigint", (c) => c.notNull())
      .addColumn("unit", "text", (c) => c.notNull())
      .addColumn("source", "text", (c) => c.notNull())
      .addColumn("line", "text", (c) => c.notNull())
      .addColumn("bytes", "integer", (c) => c.notNull())
      .addPrimaryKeyConstraint("log_records_pk", ["device_id", "stream", "seq"])
      .execute();
    await db.schema.createIndex("log_records_org_time").on("log_records").columns(["org_id", "time"]).execute();
    await db.schema.createIndex("log_records_device_time").on("log_records").columns(["device_id", "time"]).execute();
    await db.schema.createIndex("log_records_time").on("log_records").column("time").execute();

    await db.schema
      .createTable("metric_samples")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("device_id", "text", (c) => c.notNull())
      .addColumn("stream", "text", (c) => c.notNull())
      .addColumn("seq", "bigint", (c) => c.notNull())
      .addColumn("time", "bigint", (c) => c.notNull())
      .addColumn("points", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("metric_samples_pk", ["device_id", "stream", "seq"])
      .execute();
    await db.schema.createIndex("metric_samples_device_time").on("metric_samples").columns(["device_id", "time"]).execute();
    await db.schema.createIndex("metric_samples_time").on("metric_samples").column("time").execute();

    await db.schema
      .createTable("telemetry_streams")
      .addColumn("device_id", "text", (c) => c.notNull())
      .addColumn("stream", "text", (c) => c.notNull())
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("acked_seq", "bigint", (c) => c.notNull())
      .addColumn("dropped_total", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("telemetry_streams_pk", ["device_id", "stream"])
      .execute();
  },
};
