import { Migrator, type Kysely } from "kysely";
import { KyselyAccessStore } from "./access/access-store.ts";
import type { StoreAdapter } from "./adapter.ts";
import { KyselyAuditStore } from "./audit/audit-store.ts";
import { KyselyDeviceMoveStore } from "./devices/device-move-store.ts";
import { KyselyDeviceStore } from "./devices/device-store.ts";
import { migrationProvider } from "./migrations/migrations.ts";
import { KyselyNixStore } from "./nix/nix-store.ts";
import { KyselyReleaseStore } from "./releases/release-store.ts";
import { LocalEvents } from "./replicas/events.ts";
import { KyselyReplicaStore } from "./replicas/replica-store.ts";
import { KyselyRolloutStore } from "./rollouts/rollout-store.ts";
import type { Database } from "./schema/schema.ts";
import { KyselySessionStore } from "./sessions/session-store.ts";
import { KyselySettingsStore } from "./settings/settings-store.ts";
import { KyselyStorageStore } from "./storage/storage-store.ts";
import type { Store } from "./store.ts";
import { KyselyTelemetryStore } from "./telemetry/telemetry-store.ts";

/** The store over Kysely: one implementation, SQLite or PostgreSQL underneath, one sub-store per concept. */
export class KyselyStore implements Store {
  readonly settings: KyselySettingsStore;
  readonly access: KyselyAccessStore;
  readonly sessions: KyselySessionStore;
  readonly audit: KyselyAuditStore;
  readonly devices: KyselyDeviceStore;
  readonly deviceMoves: KyselyDeviceMoveStore;
  readonly releases: KyselyReleaseStore;
  readonly rollouts: KyselyRolloutStore;
  readonly telemetry: KyselyTelemetryStore;
  readonly nix: KyselyNixStore;
  readonly storage: KyselyStorageStore;
  readonly replicas: KyselyReplicaStore;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {
    this.settings = new KyselySettingsStore(db);
    this.access = new KyselyAccessStore(db, adapter);
    this.sessions = new KyselySessionStore(db, adapter);
    this.audit = new KyselyAuditStore(db, adapter);
    this.devices = new KyselyDeviceStore(db, adapter);
    this.deviceMoves = new KyselyDeviceMoveStore(db, adapter);
    this.releases = new KyselyReleaseStore(db, adapter);
    this.rollouts = new KyselyRolloutStore(db, adapter);
    this.telemetry = new KyselyTelemetryStore(db, adapter);
    this.nix = new KyselyNixStore(db, adapter);
    this.storage = new KyselyStorageStore(db, adapter);
    this.replicas = new KyselyReplicaStore(db, adapter.events ?? new LocalEvents());
  }

  get dialect(): "sqlite" | "postgres" {
    return this.adapter.dialect;
  }

  async migrate(): Promise<void> {
    const { error, results } = await new Migrator({ db: this.db, provider: migrationProvider }).migrateToLatest();
    if (error) {
      const failed = results?.find((r) => r.status === "Error")?.migrationName;
      throw new Error(`database migration ${failed ?? ""} failed: ${String(error)}`);
    }
  }

  async close(): Promise<void> {
    await this.adapter.close(this.db);
    await this.db.destroy();
  }
}
