import type { Kysely, Migration } from "kysely";

/** Releases, each device's desired and current release per name, and its release steps. */
export const releasesMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("releases")
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("counter", "bigint", (c) => c.notNull())
      .addColumn("version", "text", (c) => c.notNull())
      .addColumn("kind", "text", (c) => c.notNull())
      .addColumn("target_path", "text", (c) => c.notNull())
      .addColumn("sha256", "text", (c) => c.notNull())
      .addColumn("length", "bigint", (c) => c.notNull())
      .addColumn("meta", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("releases_pk", ["org_id", "name", "counter"])
      .execute();
    await db.schema.createIndex("releases_sha256").on("releases").columns(["org_id", "sha256"]).execute();

    await db.schema
      .createTable("device_releases")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("device_id", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("desired_target", "text", (c) => c.notNull())
      .addColumn("desired_counter", "bigint", (c) => c.notNull())
      .addColumn("desired_version", "text", (c) => c.notNull())
      .addColumn("desired_kind", "text", (c) => c.notNull())
      .addColumn("desired_at", "bigint", (c) => c.notNull())
      .addColumn("current_version", "text", (c) => c.notNull())
      .addColumn("current_counter", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("device_releases_pk", ["device_id", "name"])
      .execute();

    await db.schema
      .createTable("release_steps")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("device_id", "text", (c) => c.notNull())
      .addColumn("seq", "bigint", (c) => c.notNull())
      .addColumn("time", "bigint", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("target_path", "text", (c) => c.notNull())
      .addColumn("step", "text", (c) => c.notNull())
      .addColumn("bytes_done", "bigint", (c) => c.notNull())
      .addColumn("bytes_total", "bigint", (c) => c.notNull())
      .addColumn("error", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("release_steps_pk", ["device_id", "seq"])
      .execute();
  },
};
