import { EventEmitter } from "node:events";
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import SQLite from "better-sqlite3";
import { Kysely, SqliteDialect, type SqliteDatabase } from "kysely";
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

/** Prepared statements kept per database; past it the least recently used is dropped. */
const STATEMENT_CACHE = 500;

/**
 * The database as Kysely sees it, with each statement prepared once and reused. Kysely prepares
 * every query it runs; better-sqlite3's prepare parses and plans the SQL each time, which cost
 * the coordinator more than running the queries did on the hot paths (a device's session
 * look-up, a metric batch). Kysely generates the same SQL text for the same query shape, so the
 * text is the key; queries with a varying number of parameters (`in (...)`) make more shapes, so
 * the cache is bounded. Safe because better-sqlite3 runs each statement to completion
 * synchronously (the store never streams rows, which would keep a statement busy).
 */
export function cachedStatements(sqlite: SQLite.Database): SqliteDatabase {
  const cache = new Map<string, SQLite.Statement>();
  return {
    close: () => sqlite.close(),
    prepare(sql: string) {
      let stmt = cache.get(sql);
      if (stmt) {
        // Most recently used last, so the first key is the one to drop.
        cache.delete(sql);
      } else {
        stmt = sqlite.prepare(sql);
        if (cache.size >= STATEMENT_CACHE) cache.delete(cache.keys().next().value!);
      }
      cache.set(sql, stmt);
      return stmt;
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
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: cachedStatements(sqlite) }) });
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
