/**
 * Inserting a batch of log lines, the one statement ingest runs per line, written for each
 * database. The query builder's row-by-row INSERT cost about twice what the database itself
 * does: compiling and preparing a statement of 11,000 parameters for every batch. Here SQLite
 * runs multi-row INSERTs prepared once, and PostgreSQL one INSERT over arrays, one per column.
 */
import type SQLite from "better-sqlite3";
import { sql, type Transaction } from "kysely";
import type { Database } from "../schema/schema.ts";
import type { LogRecordInput } from "./telemetry-store.ts";

/** Log lines of one stream, as ingest stores them. */
export interface LogLinesInsert {
  orgId: string;
  deviceId: string;
  stream: string;
  /** The coordinator's clock, ms: what retention counts from. */
  receivedAt: number;
  records: readonly LogRecordInput[];
}

/**
 * Inserts the lines not stored yet (by device, stream, seq) within the caller's transaction and
 * returns the seqs it stored, in no particular order.
 */
export type LogLineInserter = (trx: Transaction<Database>, lines: LogLinesInsert) => Promise<number[]>;

/** What a stored line counts for in its organization's quota: the same on every database. */
export const logBytes = (r: { line: string; unit: string }): number => r.line.length + r.unit.length + 64;

const COLUMNS = "org_id, device_id, stream, seq, time, unit, source, line, bytes, received_at, claimed_time";
const WIDTH = 11;
/**
 * Rows per SQLite statement: a batch is cut into statements of these sizes, largest first, so
 * four prepared statements serve every batch size with at most 22 statements for 1000 lines.
 * 512 rows are 5,632 parameters, within SQLite's 32,766.
 */
const SQLITE_ROWS = [512, 64, 8, 1];

/**
 * SQLite: runs on the database's one connection, which the caller's Kysely transaction holds
 * (Kysely's SQLite driver lends that connection to one transaction at a time), so these
 * statements are part of it.
 */
export function sqliteLogInserter(db: SQLite.Database): LogLineInserter {
  const statements = new Map<number, SQLite.Statement>();
  const statement = (rows: number): SQLite.Statement => {
    let s = statements.get(rows);
    if (!s) {
      const values = Array.from({ length: rows }, () => `(${Array.from({ length: WIDTH }, () => "?").join(", ")})`).join(", ");
      s = db.prepare(`INSERT INTO log_records (${COLUMNS}) VALUES ${values} ON CONFLICT (device_id, stream, seq) DO NOTHING RETURNING seq`).pluck();
      statements.set(rows, s);
    }
    return s;
  };
  return async (_trx, { orgId, deviceId, stream, receivedAt, records }) => {
    const stored: number[] = [];
    let i = 0;
    for (const rows of SQLITE_ROWS) {
      if (records.length - i < rows) continue;
      const stmt = statement(rows);
      const params: unknown[] = new Array(rows * WIDTH);
      while (records.length - i >= rows) {
        for (let k = 0, o = 0; k < rows; k++, i++, o += WIDTH) {
          const r = records[i]!;
          params[o] = orgId;
          params[o + 1] = deviceId;
          params[o + 2] = stream;
          params[o + 3] = r.seq;
          params[o + 4] = r.time;
          params[o + 5] = r.unit;
          params[o + 6] = r.source;
          params[o + 7] = r.line;
          params[o + 8] = logBytes(r);
          params[o + 9] = receivedAt;
          params[o + 10] = r.claimedTime ?? null;
        }
        for (const seq of stmt.all(params) as number[]) stored.push(seq);
      }
    }
    return stored;
  };
}

/** PostgreSQL: one statement whatever the batch size, its rows from one array per column. */
export const postgresLogInserter: LogLineInserter = async (trx, { orgId, deviceId, stream, receivedAt, records }) => {
  if (records.length === 0) return [];
  const n = records.length;
  const seqs = new Array<number>(n);
  const times = new Array<number>(n);
  const units = new Array<string>(n);
  const sources = new Array<string>(n);
  const lines = new Array<string>(n);
  const bytes = new Array<number>(n);
  const claimed = new Array<number | null>(n);
  for (let i = 0; i < n; i++) {
    const r = records[i]!;
    seqs[i] = r.seq;
    times[i] = r.time;
    units[i] = r.unit;
    sources[i] = r.source;
    lines[i] = r.line;
    bytes[i] = logBytes(r);
    claimed[i] = r.claimedTime ?? null;
  }
  const { rows } = await sql<{ seq: number }>`
    INSERT INTO log_records (${sql.raw(COLUMNS)})
    SELECT ${orgId}, ${deviceId}, ${stream}, u.seq, u.time, u.unit, u.source, u.line, u.bytes, ${receivedAt}::bigint, u.claimed_time
    FROM unnest(${seqs}::bigint[], ${times}::bigint[], ${units}::text[], ${sources}::text[], ${lines}::text[], ${bytes}::integer[], ${claimed}::bigint[])
      AS u(seq, time, unit, source, line, bytes, claimed_time)
    ON CONFLICT (device_id, stream, seq) DO NOTHING
    RETURNING seq`.execute(trx);
  return rows.map((r) => Number(r.seq));
};
