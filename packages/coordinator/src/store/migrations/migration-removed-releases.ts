import type { Kysely, Migration } from "kysely";

/**
 * Releases removed with `release rm`: what they were, kept so that a removed release's counter
 * is never given to another (devices order releases by counter, and a counter signed once means
 * one artifact for ever). Their artifacts are not needed by them: garbage collection may delete those.
 */
export const removedReleasesMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable("removed_releases")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("counter", "bigint", (c) => c.notNull())
      .addColumn("version", "text", (c) => c.notNull())
      .addColumn("kind", "text", (c) => c.notNull())
      .addColumn("target_path", "text", (c) => c.notNull())
      .addColumn("sha256", "text", (c) => c.notNull())
      .addColumn("length", "bigint", (c) => c.notNull())
      .addColumn("meta", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("removed_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("removed_releases_pk", ["org_id", "name", "counter"])
      .execute();
  },
};
