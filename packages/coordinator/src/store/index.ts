import { join } from "node:path";
import { openPostgresStore } from "./postgres.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { Store } from "./store.ts";

export type * from "./store.ts";
export type * from "./settings/settings-store.ts";
export type * from "./access/access-store.ts";
export type * from "./sessions/session-store.ts";
export type * from "./audit/audit-store.ts";
export type * from "./devices/device-store.ts";
export type * from "./devices/device-move-store.ts";
export type * from "./releases/release-store.ts";
export type * from "./rollouts/rollout-store.ts";
export type * from "./telemetry/telemetry-store.ts";
export type * from "./nix/nix-store.ts";
export type * from "./storage/storage-store.ts";
export type * from "./replicas/replica-store.ts";
export type * from "./replicas/events.ts";
export { StoreConflictError } from "./errors.ts";
export { copyCounts, countDevices, moveCount } from "./rollouts/rollout-rows.ts";
export { openPostgresStore } from "./postgres.ts";
export { openSqliteStore } from "./sqlite.ts";

/**
 * Opens the coordinator's store: PostgreSQL when `databaseUrl` is postgres://..., otherwise the
 * SQLite file `flotilla.db` in the data directory.
 */
export function openStore(opts: { databaseUrl?: string; dataDir: string }): Promise<Store> {
  if (!opts.databaseUrl) return openSqliteStore(join(opts.dataDir, "flotilla.db"));
  if (/^postgres(ql)?:\/\//.test(opts.databaseUrl)) return openPostgresStore(opts.databaseUrl);
  throw new Error("--database-url must be a postgres:// or postgresql:// URL");
}
