import type { Kysely, Migration } from "kysely";

/**
 * Migration 0014_device_control: per device and release name, whether it should run
 * (`run_state`: running, stopped, removed), a restart counter the agent acts on once per step,
 * whether an undeploy purges its data, the last control command (what, by whom, when) and what
 * the device last reported of it. An undeployed release stays as a row with run_state removed,
 * so its restart counter keeps growing should it be deployed again.
 */
export const deviceControlMigration: Migration = {
  async up(db: Kysely<unknown>) {
    const add = (column: string, type: "text" | "bigint", fallback: string | number) =>
      db.schema.alterTable("device_releases").addColumn(column, type, (c) => c.notNull().defaultTo(fallback)).execute();
    await add("run_state", "text", "running");
    await add("restart_gen", "bigint", 0);
    await add("purge_data", "bigint", 0);
    await add("control_action", "text", "");
    await add("control_by", "text", "");
    await add("control_at", "bigint", 0);
    await add("reported_state", "text", "");
    await add("reported_at", "bigint", 0);
    await add("reported_error", "text", "");
  },
};
