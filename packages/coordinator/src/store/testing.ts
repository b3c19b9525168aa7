/**
 * The databases every store contract suite runs on: SQLite always, PostgreSQL when
 * FLOTILLA_TEST_POSTGRES_URL is set (each store on a fresh database, dropped afterwards).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import SQLite from "better-sqlite3";
import { Kysely, PostgresDialect, SqliteDialect } from "kysely";
import pg from "pg";
import { afterEach, beforeEach } from "vitest";
import { openPostgresStore, openSqliteStore, type Store } from "./index.ts";

/** A fresh database, not yet opened as a store. */
export interface FreshDatabase {
  /** Opens it as a store, which migrates it to the latest migration. */
  open(): Promise<Store>;
  /** A bare Kysely on it (no migrations run), e.g. to migrate part way; destroy it after use. */
  raw(): Kysely<any>;
  drop(): Promise<void>;
}

export interface StoreBackend {
  name: string;
  enabled: boolean;
  /** Opens a store on a fresh database; `reopen` opens the same database again. */
  create(): Promise<{ store: Store; reopen(): Promise<Store>; drop(): Promise<void> }>;
  /** A fresh database, left empty. */
  fresh(): Promise<FreshDatabase>;
}

const pgUrl = process.env.FLOTILLA_TEST_POSTGRES_URL;

async function freshSqlite(): Promise<FreshDatabase> {
  const dir = await mkdtemp(join(tmpdir(), "flotilla-store-"));
  const path = join(dir, "flotilla.db");
  return {
    open: () => openSqliteStore(path),
    raw: () => new Kysely<any>({ dialect: new SqliteDialect({ database: new SQLite(path) }) }),
    drop: () => rm(dir, { recursive: true, force: true }),
  };
}

async function freshPostgres(): Promise<FreshDatabase> {
  const name = `flotilla_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(pgUrl!);
  url.pathname = `/${name}`;
  return {
    open: () => openPostgresStore(url.toString()),
    raw: () => new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url.toString(), max: 1 }) }) }),
    async drop() {
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      // A closed pool's connections may still be saying goodbye; forcing them off mid-way makes
      // the driver throw from a socket nobody listens to. Wait (with a deadline) until they left.
      const deadline = Date.now() + 5_000;
      while (Date.now() < deadline) {
        const { rows } = await c.query<{ n: string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1", [name]);
        if (Number(rows[0]?.n) === 0) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

async function create(fresh: () => Promise<FreshDatabase>) {
  const db = await fresh();
  return { store: await db.open(), reopen: () => db.open(), drop: () => db.drop() };
}

export const storeBackends: StoreBackend[] = [
  { name: "SQLite", enabled: true, create: () => create(freshSqlite), fresh: freshSqlite },
  { name: "PostgreSQL", enabled: Boolean(pgUrl), create: () => create(freshPostgres), fresh: freshPostgres },
];

/** A test's store, opened fresh by `storeForEachTest`. */
export interface StoreFixture {
  /** The store the current test runs on. */
  readonly store: Store;
  /** Closes the current store and opens its database again as `store`. */
  reopen(): Promise<Store>;
}

/**
 * Opens a store on a fresh database before each test, with two organizations (orgA "acme" and
 * orgB "globex"), and closes and drops it after.
 */
export function storeForEachTest(backend: StoreBackend, now: number): StoreFixture {
  let ctx: Awaited<ReturnType<StoreBackend["create"]>>;
  let current: Store | undefined;
  beforeEach(async () => {
    ctx = await backend.create();
    current = ctx.store;
    await current.access.createOrg({ id: "orgA", name: "acme", createdAt: now });
    await current.access.createOrg({ id: "orgB", name: "globex", createdAt: now });
  });
  afterEach(async () => {
    await current?.close();
    current = undefined;
    await ctx.drop();
  });
  return {
    get store() {
      if (!current) throw new Error("no store outside a test");
      return current;
    },
    async reopen() {
      await current?.close();
      current = undefined;
      current = await ctx.reopen();
      return current;
    },
  };
}

/**
 * Enrolls `n` auto-approved devices in orgA (ids dev_0000, dev_0001, ... in order, names d0,
 * d1, ...) through one join token, as a store fixture's tests need them; returns their ids.
 */
export async function enrollApproved(store: Store, n: number, now: number): Promise<string[]> {
  await store.devices.createJoinToken({
    id: "tok", orgId: "orgA", secretHash: "h".repeat(64), labels: {}, usesAllowed: 0, uses: 0,
    expiresAt: now + 3_600_000, autoApprove: true, createdAt: now, revokedAt: null,
  });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await store.devices.enrollDevice("tok", { id: `dev_${String(i).padStart(4, "0")}`, publicKey: `key${i}`, name: `d${i}`, facts: {}, agentVersion: "1", capabilities: [] }, now);
    if (!r.ok) throw new Error(`enrolling d${i}: ${r.reason}`);
    ids.push(r.device.id);
  }
  return ids;
}
