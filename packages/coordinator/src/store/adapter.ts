import type { Kysely, Transaction } from "kysely";
import type { Database } from "./schema.ts";

/**
 * What differs between the databases, in one place. Queries are shared; they ask the adapter
 * instead of testing which dialect they run on.
 */
export interface StoreAdapter {
  readonly dialect: "sqlite" | "postgres";
  /** Whether `SELECT ... FOR UPDATE` exists. SQLite has one writer at a time and needs none. */
  readonly rowLocks: boolean;
  /** Called inside a transaction that changed a device's desired state. */
  notifyInTransaction(trx: Transaction<Database>, orgId: string, deviceId: string): Promise<void>;
  /** Called after that transaction committed. */
  notifyAfterCommit(orgId: string, deviceId: string): void;
  /** Registers a listener for committed device changes (local, and other replicas' on PostgreSQL). */
  listen(listener: (orgId: string, deviceId: string) => void): () => void;
  /** Releases dialect resources (the LISTEN connection). */
  close(db: Kysely<Database>): Promise<void>;
}
