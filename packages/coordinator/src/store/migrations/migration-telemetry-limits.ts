import { sql, type Kysely, type Migration } from "kysely";

/**
 * 0011_telemetry_limits: retention goes by the coordinator's clock and is kept per organization.
 *
 * - `received_at` on log lines and samples: when the coordinator stored them. Existing rows take
 *   their capture time, or the migration's time where the device claimed a later one.
 * - `claimed_time`: the device's own time where the coordinator bounded it (null: `time` is it).
 * - `bytes` on samples, and per stream the bytes of lines and of samples stored, so each
 *   organization's usage is a sum over its streams rather than over its rows.
 */
export const telemetryLimitsMigration: Migration = {
  async up(db: Kysely<any>) {
    const now = Date.now();
    for (const table of ["log_records", "metric_samples"]) {
      await db.schema.alterTable(table).addColumn("received_at", "bigint", (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.alterTable(table).addColumn("claimed_time", "bigint").execute();
      await db.updateTable(table).set((eb) => ({ received_at: eb.ref("time") })).where("time", "<=", now).execute();
      await db.updateTable(table).set({ received_at: now }).where("time", ">", now).execute();
      await db.schema.createIndex(`${table}_org_received`).on(table).columns(["org_id", "received_at"]).execute();
    }
    await db.schema.alterTable("metric_samples").addColumn("bytes", "integer", (c) => c.notNull().defaultTo(0)).execute();
    await db.updateTable("metric_samples").set({ bytes: sql`length(points) + 64` }).execute();

    await db.schema.alterTable("telemetry_streams").addColumn("log_bytes", "bigint", (c) => c.notNull().defaultTo(0)).execute();
    await db.schema.alterTable("telemetry_streams").addColumn("metric_bytes", "bigint", (c) => c.notNull().defaultTo(0)).execute();
    const used = (table: string) =>
      sql`(select coalesce(sum(r.bytes), 0) from ${sql.table(table)} r where r.device_id = telemetry_streams.device_id and r.stream = telemetry_streams.stream)`;
    await db.updateTable("telemetry_streams").set({ log_bytes: used("log_records"), metric_bytes: used("metric_samples") }).execute();
    await db.schema.createIndex("telemetry_streams_org").on("telemetry_streams").column("org_id").execute();
  },
};
