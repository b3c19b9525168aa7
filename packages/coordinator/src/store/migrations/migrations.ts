/**
 * The one migration set, run by SQLite and PostgreSQL alike. Only Kysely's schema builder and
 * types both dialects share: no dialect-specific SQL. Add new migrations; never edit old ones.
 */
import type { Kysely, Migration, MigrationProvider } from "kysely";
import { artifactOwnersMigration } from "./migration-artifact-owners.ts";
import { deviceControlMigration } from "./migration-device-control.ts";
import { devicePresenceMigration } from "./migration-device-presence.ts";
import { deviceMoveMigration } from "./migration-device-move.ts";
import { telemetryRetentionMigration } from "./migration-telemetry-retention.ts";
import { nixMigration } from "./migration-nix.ts";
import { telemetryMigration } from "./migration-telemetry.ts";
import { telemetryLimitsMigration } from "./migration-telemetry-limits.ts";
import { releasesMigration } from "./migration-releases.ts";
import { rollbackMigration } from "./migration-rollback.ts";
import { rolloutsMigration } from "./migration-rollouts.ts";
import { rolloutCountersMigration } from "./migration-rollout-counters.ts";
import { rolloutDevicePagesMigration } from "./migration-rollout-device-pages.ts";
import { deviceSummaryMigration } from "./migration-device-summary.ts";
import { removedReleasesMigration } from "./migration-removed-releases.ts";
import { replicasMigration } from "./migration-replicas.ts";
import { storageQuotasMigration } from "./migration-storage-quotas.ts";

const initial: Migration = {
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable("orgs")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("name", "text", (c) => c.notNull().unique())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .execute();

    await db.schema
      .createTable("admin_keys")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("public_key", "text", (c) => c.notNull())
      .addColumn("role", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("revoked_at", "bigint")
      .execute();
    await db.schema.createIndex("admin_keys_public_key").on("admin_keys").column("public_key").execute();
    await db.schema.createIndex("admin_keys_org").on("admin_keys").column("org_id").execute();

    await db.schema
      .createTable("sessions")
      .addColumn("token_hash", "text", (c) => c.primaryKey())
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("principal_kind", "text", (c) => c.notNull())
      .addColumn("principal_id", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("expires_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("sessions_principal").on("sessions").columns(["principal_kind", "principal_id"]).execute();

    await db.schema
      .createTable("nonces")
      .addColumn("nonce", "text", (c) => c.primaryKey())
      .addColumn("expires_at", "bigint", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("nonces_expires").on("nonces").column("expires_at").execute();

    await db.schema
      .createTable("join_tokens")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("secret_hash", "text", (c) => c.notNull())
      .addColumn("labels", "text", (c) => c.notNull())
      .addColumn("uses_allowed", "integer", (c) => c.notNull())
      .addColumn("uses", "integer", (c) => c.notNull())
      .addColumn("expires_at", "bigint", (c) => c.notNull())
      .addColumn("auto_approve", "integer", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("revoked_at", "bigint")
      .execute();
    await db.schema.createIndex("join_tokens_org").on("join_tokens").column("org_id").execute();

    await db.schema
      .createTable("devices")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("public_key", "text", (c) => c.notNull().unique())
      .addColumn("lifecycle", "text", (c) => c.notNull())
      .addColumn("labels", "text", (c) => c.notNull())
      .addColumn("facts", "text", (c) => c.notNull())
      .addColumn("agent_version", "text", (c) => c.notNull())
      .addColumn("capabilities", "text", (c) => c.notNull())
      .addColumn("generation", "bigint", (c) => c.notNull())
      .addColumn("observed_generation", "bigint", (c) => c.notNull())
      .addColumn("connected", "integer", (c) => c.notNull())
      .addColumn("last_seen_at", "bigint")
      .addColumn("join_token_id", "text")
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("updated_at", "bigint", (c) => c.notNull())
      .addUniqueConstraint("devices_org_name", ["org_id", "name"])
      .execute();

    await db.schema
      .createTable("device_streams")
      .addColumn("device_id", "text", (c) => c.notNull())
      .addColumn("stream", "text", (c) => c.notNull())
      .addColumn("acked_seq", "bigint", (c) => c.notNull())
      .addPrimaryKeyConstraint("device_streams_pk", ["device_id", "stream"])
      .execute();

    await db.schema
      .createTable("settings")
      .addColumn("key", "text", (c) => c.primaryKey())
      .addColumn("value", "text", (c) => c.notNull())
      .execute();
  },
};

/**
 * Members, API tokens and the audit log. Admin keys become credentials of members; every key
 * that existed before becomes a member of its own, with the key's role.
 */
const members: Migration = {
  async up(db: Kysely<any>) {
    await db.schema
      .createTable("members")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("role", "text", (c) => c.notNull())
      .addColumn("password_hash", "text")
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("removed_at", "bigint")
      .execute();
    await db.schema.createIndex("members_org_name").on("members").columns(["org_id", "name"]).execute();

    await db.schema.alterTable("admin_keys").addColumn("member_id", "text").execute();
    const keys = await db.selectFrom("admin_keys").select(["id", "org_id", "name", "role", "created_at"]).execute();
    for (const k of keys as { id: string; org_id: string; name: string; role: string; created_at: number }[]) {
      const memberId = `mem_${k.id}`;
      await db
        .insertInto("members")
        .values({ id: memberId, org_id: k.org_id, name: `${k.name}-${k.id}`, role: k.role, password_hash: null, created_at: k.created_at, removed_at: null })
        .execute();
      await db.updateTable("admin_keys").set({ member_id: memberId }).where("id", "=", k.id).execute();
    }

    await db.schema
      .createTable("api_tokens")
      .addColumn("id", "text", (c) => c.primaryKey())
      .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("role", "text", (c) => c.notNull())
      .addColumn("secret_hash", "text", (c) => c.notNull())
      .addColumn("created_by", "text", (c) => c.notNull())
      .addColumn("created_at", "bigint", (c) => c.notNull())
      .addColumn("expires_at", "bigint", (c) => c.notNull())
      .addColumn("revoked_at", "bigint")
      .execute();
    await db.schema.createIndex("api_tokens_org").on("api_tokens").column("org_id").execute();

    await db.schema
      .createTable("audit_log")
      .addColumn("org_id", "text", (c) => c.notNull())
      .addColumn("seq", "bigint", (c) => c.notNull())
      .addColumn("time", "bigint", (c) => c.notNull())
      .addColumn("actor", "text", (c) => c.notNull())
      .addColumn("action", "text", (c) => c.notNull())
      .addColumn("target", "text", (c) => c.notNull())
      .addColumn("source", "text", (c) => c.notNull())
      .addColumn("outcome", "text", (c) => c.notNull())
      .addColumn("detail", "text", (c) => c.notNull())
      .addColumn("prev_hash", "text", (c) => c.notNull())
      .addColumn("hash", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("audit_log_pk", ["org_id", "seq"])
      .execute();
    await db.schema.createIndex("audit_log_time").on("audit_log").columns(["org_id", "time"]).execute();

    await db.schema
      .createTable("audit_heads")
      .addColumn("org_id", "text", (c) => c.primaryKey())
      .addColumn("seq", "bigint", (c) => c.notNull())
      .addColumn("hash", "text", (c) => c.notNull())
      .execute();
  },
};

/** Migrations by name; names sort in the order they run. */
export const migrations: Record<string, Migration> = {
  "0001_initial": initial,
  "0002_members_tokens_audit": members,
  "0007_nix": nixMigration,
  "0005_telemetry": telemetryMigration,
  "0004_releases": releasesMigration,
  "0008_rollouts": rolloutsMigration,
  "0009_rollout_rollback": rollbackMigration,
  "0010_artifact_owners": artifactOwnersMigration,
  "0011_telemetry_limits": telemetryLimitsMigration,
  "0012_storage_quotas": storageQuotasMigration,
  "0013_removed_releases": removedReleasesMigration,
  "0014_device_control": deviceControlMigration,
  "0015_device_presence": devicePresenceMigration,
  "0016_device_move": deviceMoveMigration,
  "0017_telemetry_retention": telemetryRetentionMigration,
  "0018_rollout_counters": rolloutCountersMigration,
  "0019_replicas": replicasMigration,
  "0020_rollout_device_pages": rolloutDevicePagesMigration,
  "0021_device_summary": deviceSummaryMigration,
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
