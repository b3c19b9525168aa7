/**
 * Whether a data directory's files hold what its database refers to: every artifact a release
 * names (`artifacts/sha256/<hex>`) and every NAR file a Nix store path names
 * (`nix/sha256/<hex>`). For the embedded database, SQLite's own integrity check too. Used by
 * restore, and by `flotilla coordinator verify` after a PostgreSQL restore (pg_restore and the
 * file store are restored apart, so this is the check that they belong together).
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import SQLite from "better-sqlite3";

export const DATABASE_FILE = "flotilla.db";

export interface VerifyReport {
  database: "sqlite" | "postgresql";
  /** SQLite's integrity_check answer ("ok" when sound); undefined for PostgreSQL. */
  integrity?: string;
  artifacts: number;
  nars: number;
  /** Files the database refers to that the data directory lacks, as data-dir-relative paths. */
  missing: string[];
}

const RELEASE_ARTIFACTS = "SELECT DISTINCT sha256 AS hex FROM releases";
const NIX_FILES = "SELECT DISTINCT file_hash AS hex FROM nix_paths";

async function missingOf(dir: string, folder: string, hexes: string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const hex of hexes) {
    const rel = join(folder, "sha256", hex);
    const ok = await stat(join(dir, rel)).then(
      (s) => s.isFile(),
      () => false,
    );
    if (!ok) missing.push(rel);
  }
  return missing;
}

async function check(dir: string, database: VerifyReport["database"], query: (sql: string) => Promise<string[]>, integrity?: string): Promise<VerifyReport> {
  const artifacts = await query(RELEASE_ARTIFACTS);
  const nars = await query(NIX_FILES);
  const missing = [...(await missingOf(dir, "artifacts", artifacts)), ...(await missingOf(dir, "nix", nars))];
  return { database, integrity, artifacts: artifacts.length, nars: nars.length, missing };
}

/** Checks the SQLite database at `dbPath` against the files of `dir` (opened read-only). */
export async function verifySqlite(dir: string, dbPath = join(dir, DATABASE_FILE)): Promise<VerifyReport> {
  let db: SQLite.Database;
  try {
    db = new SQLite(dbPath, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new Error(`cannot open the database ${dbPath}: ${(err as Error).message}`);
  }
  try {
    const rows = db.pragma("integrity_check") as { integrity_check: string }[];
    const integrity = rows.map((r) => r.integrity_check).join("; ");
    if (integrity !== "ok") return { database: "sqlite", integrity, artifacts: 0, nars: 0, missing: [] };
    return await check(dir, "sqlite", (sql) => Promise.resolve((db.prepare(sql).all() as { hex: string }[]).map((r) => r.hex)), integrity);
  } catch (err) {
    if (err instanceof SQLite.SqliteError) throw new Error(`the database ${dbPath} is damaged: ${err.message}`);
    throw err;
  } finally {
    db.close();
  }
}

/** Checks the PostgreSQL database at `url` against the files of `dir`. */
export async function verifyPostgres(dir: string, url: string): Promise<VerifyReport> {
  const { default: pg } = await import("pg");
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await check(dir, "postgresql", async (sql) => (await client.query<{ hex: string }>(sql)).rows.map((r) => r.hex));
  } finally {
    await client.end();
  }
}

/** Whether the report finds the data directory sound. */
export function verified(r: VerifyReport): boolean {
  return (r.integrity === undefined || r.integrity === "ok") && r.missing.length === 0;
}

/** Lines for people: what was checked and what is wrong. */
export function describeVerify(r: VerifyReport): string {
  if (r.integrity !== undefined && r.integrity !== "ok") return `the SQLite database fails its integrity check: ${r.integrity}`;
  const checked = `${r.artifacts} release artifact(s) and ${r.nars} NAR file(s) the database refers to`;
  if (!r.missing.length) return `${r.integrity ? "database integrity ok; " : ""}all ${checked} are present`;
  return [`${r.missing.length} of the ${checked} are missing:`, ...r.missing.map((m) => `  ${m}`)].join("\n");
}
