/**
 * The databases every store contract suite runs on: SQLite always, PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each store on a fresh database, dropped afterwards).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { openPostgresStore, openSqliteStore, type Store } from "./index.ts";

export interface StoreBackend {
  name: string;
  enabled: boolean;
  /** Opens a store on a fresh database; `reopen` opens the same database again. */
  create(): Promise<{ store: Store; reopen(): Promise<Store>; drop(): Promise<void> }>;
}

const pgUrl = process.env.FLOTILLA_TEST_POSTGRES_URL;

export const storeBackends: StoreBackend[] = [
  {
    name: "SQLite",
    enabled: true,
    async create() {
      const dir = await mkdtemp(join(tmpdir(), "flotilla-store-"));
      const path = join(dir, "flotilla.db");
      return { store: await openSqliteStore(path), reopen: () => openSqliteStore(path), drop: () => rm(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: "PostgreSQL",
    enabled: Boolean(pgUrl),
    async create() {
      const name = `flotilla_test_${randomBytes(6).toString("hex")}`;
      const admin = new pg.Client({ connectionString: pgUrl });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      const url = new URL(pgUrl!);
      url.pathname = `/${name}`;
      return {
        store: await openPostgresStore(url.toString()),
        reopen: () => openPostgresStore(url.toString()),
        async drop() {
          const c = new pg.Client({ connectionString: pgUrl });
          await c.connect();
          await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
          await c.end();
        },
      };
    },
  },
];
