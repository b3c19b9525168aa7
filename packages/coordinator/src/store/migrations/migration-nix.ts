import type { Kysely, Migration } from "kysely";

/** Migration 0007_nix: the organizations' Nix signing keys and binary-cache path metadata. */
export const nixMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("nix_keys")
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("public_key", "text", (c) => c.notNull())
      .addColumn("sealed_secret", "text")
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("nix_keys_pk", ["org_id", "name"])
      .execute();

    await db.schema
      .createTable("nix_nars")
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("file_hash", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("nix_nars_pk", ["org_id", "file_hash"])
      .execute();

    await db.schema
      .createTable("nix_paths")
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("hash_part", "text", (c) => c.notNull())
      .addColumn("store_path", "text", (c) => c.notNull())
      .addColumn("file_hash", "text", (c) => c.notNull())
      .addColumn("file_size", "bigint", (c) => c.notNull())
      .addColumn("nar_hash", "text", (c) => c.notNull())
      .addColumn("nar_size", "bigint", (c) => c.notNull())
      .addColumn("refs", "text", (c) => c.notNull())
      .addColumn("deriver", "text", (c) => c.notNull())
      .addColumn("sigs", "text", (c) => c.notNull())
      .addColumn("ca", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("nix_paths_pk", ["org_id", "hash_part"])
      .execute();
    await db.schema.createIndex("nix_paths_file").on("nix_paths").columns(["org_id", "file_hash"]).execute();
  },
};
