/**
 * The coordinator's storage contract: one sub-store per concept. One implementation over Kysely
 * serves SQLite and PostgreSQL; dialect differences live in the adapter, never in callers.
 *
 * Every method that reads or writes an organization's objects takes `orgId` and scopes its
 * query by it, so no call can return another organization's rows. The few unscoped look-ups
 * (by public key, by join token id, by session hash) exist only to establish who a caller is
 * and which organization it belongs to.
 *
 * Writes that claim something unique (a name, a key, a token) throw `StoreConflictError`
 * (errors.ts) when another writer claimed it first, never a raw driver error.
 *
 * Times are milliseconds since the epoch. Public keys are raw 32-byte ed25519 keys in base64url
 * (a node id).
 */
import type { AccessStore } from "./access/access-store.ts";
import type { AuditStore } from "./audit/audit-store.ts";
import type { DeviceMoveStore } from "./devices/device-move-store.ts";
import type { DeviceStore } from "./devices/device-store.ts";
import type { NixStore } from "./nix/nix-store.ts";
import type { ReleaseStore } from "./releases/release-store.ts";
import type { ReplicaStore } from "./replicas/replica-store.ts";
import type { RolloutStore } from "./rollouts/rollout-store.ts";
import type { SessionStore } from "./sessions/session-store.ts";
import type { SettingsStore } from "./settings/settings-store.ts";
import type { StorageStore } from "./storage/storage-store.ts";
import type { TelemetryStore } from "./telemetry/telemetry-store.ts";

export interface Store {
  /** Which database this is, for messages and `--print-config`. */
  readonly dialect: "sqlite" | "postgres";

  /** Small coordinator-wide values (the setup code hash, for one). */
  readonly settings: SettingsStore;
  /** Organizations, members, admin keys, API tokens and the first owner's bootstrap. */
  readonly access: AccessStore;
  /** Bearer sessions and single-use nonces. */
  readonly sessions: SessionStore;
  /** Each organization's hash-chained audit log. */
  readonly audit: AuditStore;
  /** Join tokens, devices and their desired and reported state. */
  readonly devices: DeviceStore;
  /** Devices moved between organizations. */
  readonly deviceMoves: DeviceMoveStore;
  /** Signed releases and their deployment to devices. */
  readonly releases: ReleaseStore;
  /** Rollouts: waves of devices taking one release, with their per-device state. */
  readonly rollouts: RolloutStore;
  /** Device logs and metrics. */
  readonly telemetry: TelemetryStore;
  /** The Nix binary cache's keys and paths. */
  readonly nix: NixStore;
  /** Each organization's storage use (artifacts, NARs, unfinished uploads), for its quota. */
  readonly storage: StorageStore;
  /** Replicas sharing the database: leases on background work, the registry, the shared key. */
  readonly replicas: ReplicaStore;

  /** Runs pending migrations. Safe to call on every start and from several replicas. */
  migrate(): Promise<void>;
  close(): Promise<void>;
}
