import type { Kysely, Migration } from "kysely";

/**
 * Which organization may use which artifact: one that has uploaded its bytes itself. Artifacts
 * are stored once for every organization, so without this one organization could name another's
 * sha256 in its releases and download it. Every organization that already has a release of an
 * artifact owns it.
 */
export const artifactOwnersMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable("artifact_owners")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("sha256", "text", (c) => c.notNull())
      .addColumn("length", "bigint", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("artifact_owners_pk", ["org_id", "sha256"])
      .execute();
    await db
      .insertInto("artifact_owners")
      .columns(["org_id", "sha256", "length", "created_at"])
      .expression(
        db
          .selectFrom("releases")
          .select(["org_id", "sha256", "length", (eb) => eb.fn.min("created_at").as("created_at")])
          .groupBy(["org_id", "sha256", "length"]),
      )
      .execute();
  },
};
