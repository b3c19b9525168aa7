/**
 * Errors the store raises for outcomes a caller can act on. The server's edge maps them to
 * Connect codes (a conflict is `AlreadyExists`), so a race between two requests never reaches a
 * client as `Code.Unknown`.
 */

/** Two writers claimed the same unique thing (a name, a key, a token); the later one lost. */
export class StoreConflictError extends Error {
  override name = "StoreConflictError";
  constructor(
    /** What was claimed twice, for the message: e.g. "organization name acme". */
    readonly what: string,
    options?: { cause?: unknown },
  ) {
    super(`${what} already exists`, options);
  }
}

/** What a client is told while the database is unavailable, and how long it should wait. */
export const DATABASE_UNAVAILABLE = { message: "the coordinator's database is unavailable; try again shortly", retryMs: 1000 };

/** Error codes that mean the database cannot be reached or is restarting, not that a query is wrong. */
const UNAVAILABLE_CODES = new Set([
  // Node's socket errors, from the PostgreSQL client.
  "ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND",
  // PostgreSQL: admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections and
  // the connection_exception class.
  "57P01", "57P02", "57P03", "53300", "08000", "08001", "08003", "08004", "08006",
  // SQLite: the file is locked by another writer for longer than the busy timeout.
  "SQLITE_BUSY",
]);

/**
 * True when `err` says the database is down, restarting or busy, so the same call may succeed
 * later: the edge answers `unavailable` with retry advice instead of `unknown`.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && UNAVAILABLE_CODES.has(code)) return true;
  const message = err instanceof Error ? err.message : "";
  return /Connection terminated|connection error|timeout exceeded when trying to connect/i.test(message);
}
