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
