import { EventEmitter } from "node:events";
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import SQLite from "better-sqlite3";
import { Kysely, SqliteDialect } from "kysely";
import type { StoreAdapter } from "./adapter.ts";
import { KyselyStore } from "./kysely-store.ts";
import type { Database } from "./schema/schema.ts";
import type { Store } from "./store.ts";
import { sqliteLogInserter } from "./telemetry/log-insert.ts";

/** better-sqlite3's extended result codes for a violated UNIQUE or PRIMARY KEY constraint. */
const SQLITE_UNIQUE = new Set(["SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"]);

/** Device-change notifications within one process: all a single-file database needs. */
export function localNotifier(): Pick<StoreAdapter, "notifyAfterCommit" | "listen"> {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  return {
    notifyAfterCommit: (orgId, deviceId) => void events.emit("change", orgId, deviceId),
    listen(listener) {
      events.on("change", listener);
      return () => void events.off("change", listener);
    },
  };
}

/**
 * Opens (creating when needed) the SQLite database at `path`: WAL mode, synchronous=FULL so a
 * committed change survives a power cut, foreign keys on. Migrates before returning.
 */
export async function openSqliteStore(path: string): Promise<Store> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const sqlite = new SQLite(path);
  sqlite.pragma("journal_mode = WAL");
  sqlite.pragma("synchronous = FULL");
  sqlite.pragma("busy_timeout = 5000");
  sqlite.pragma("foreign_keys = ON");
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  const adapter: StoreAdapter = {
    dialect: "sqlite",
    rowLocks: false,
    isUniqueViolation: (err) => err instanceof SQLite.SqliteError && SQLITE_UNIQUE.has(err.code),
    notifyInTransaction: async () => {},
    notifyManyInTransaction: async () => {},
    insertLogLines: sqliteLogInserter(sqlite),
    ...localNotifier(),
    close: async () => {},
  };
  const store = new KyselyStore(db, adapter);
  try {
    await store.migrate();
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
