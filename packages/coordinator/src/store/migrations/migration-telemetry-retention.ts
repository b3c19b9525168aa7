import type { Kysely, Migration } from "kysely";

/**
 * Migration 0017_telemetry_retention: per organization, how long its device logs and metric
 * samples are kept (ms; 0: the coordinator's --log-retention-ms).
 */
export const telemetryRetentionMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("telemetry_retention")
      .addColumn("org_id", "text", (c) => c.primaryKey())
      .addColumn("log_retention_ms", "bigint", (c) => c.notNull())
      .addColumn("metric_retention_ms", "bigint", (c) => c.notNull())
      .execute();
  },
};
