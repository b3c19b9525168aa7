import type { Kysely, Transaction } from "kysely";
import { StoreConflictError } from "./errors.ts";
import type { ReplicaEvents } from "./replicas/events.ts";
import type { Database } from "./schema/schema.ts";
import type { LogLineInserter } from "./telemetry/log-insert.ts";

/**
 * What differs between the databases, in one place. Queries are shared; they ask the adapter
 * instead of testing which dialect they run on.
 */
export interface StoreAdapter {
  readonly dialect: "sqlite" | "postgres";
  /** Whether `SELECT ... FOR UPDATE` exists. SQLite has one writer at a time and needs none. */
  readonly rowLocks: boolean;
  /** Whether `err` is the driver's report of a violated unique or primary key constraint. */
  isUniqueViolation(err: unknown): boolean;
  /** Called inside a transaction that changed a device's desired state. */
  notifyInTransaction(trx: Transaction<Database>, orgId: string, deviceId: string): Promise<void>;
  /** The same for many devices of one organization, in one statement. */
  notifyManyInTransaction(trx: Transaction<Database>, orgId: string, deviceIds: readonly string[]): Promise<void>;
  /** Called after that transaction committed. */
  notifyAfterCommit(orgId: string, deviceId: string): void;
  /** Registers a listener for committed device changes (local, and other replicas' on PostgreSQL). */
  listen(listener: (orgId: string, deviceId: string) => void): () => void;
  /** Messages to every replica sharing the database (LISTEN/NOTIFY); within the process when absent. */
  events?: ReplicaEvents;
  /** Inserts a batch of log lines in the database's fastest way (telemetry/log-insert.ts). */
  insertLogLines: LogLineInserter;
  /** Releases dialect resources (the LISTEN connection). */
  close(db: Kysely<Database>): Promise<void>;
}

/**
 * Runs a write that claims something unique (`what`, for the message) and turns the database's
 * unique-constraint violation into a `StoreConflictError`: the write that lost a race.
 */
export async function claim<T>(adapter: StoreAdapter, what: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    if (adapter.isUniqueViolation(err)) throw new StoreConflictError(what, { cause: err });
    throw err;
  }
}

/**
 * Locks the organization's row until the transaction ends (PostgreSQL; SQLite has one writer),
 * so check-then-insert claims within one organization (a member's name, a key) run one at a time.
 */
export async function lockOrg(trx: Transaction<Database>, adapter: StoreAdapter, orgId: string): Promise<void> {
  if (adapter.rowLocks) await trx.selectFrom("orgs").select("id").where("id", "=", orgId).forNoKeyUpdate().executeTakeFirst();
}
