import type { Kysely } from "kysely";
import { claim, type StoreAdapter } from "../adapter.ts";
import { num } from "../columns.ts";
import { GroupCommit } from "../group-commit.ts";
import type { Database } from "../schema/schema.ts";

/** admin: an admin key; member: a password login; device: an agent. */
export type PrincipalKind = "admin" | "member" | "device";

export interface SessionRow {
  /** sha256 of the bearer token, hex. The token itself is never stored. */
  tokenHash: string;
  orgId: string;
  principalKind: PrincipalKind;
  principalId: string;
  createdAt: number;
  expiresAt: number;
}

/**
 * Bearer sessions and single-use nonces. Unscoped by organization: a session is how the store
 * learns which organization a caller belongs to.
 */
export interface SessionStore {
  /**
   * Stores a session; sessions expired at its creation time may be purged. Throws
   * `StoreConflictError` when a session with this hash exists.
   */
  createSession(session: SessionRow): Promise<void>;
  /** The session with this hash, if it has not expired at `now`. */
  getSession(tokenHash: string, now: number): Promise<SessionRow | undefined>;
  deleteSessionsOf(principalKind: PrincipalKind, principalId: string): Promise<void>;
  /**
   * Records a single-use nonce. Returns false when it was recorded before (a replay).
   * Nonces past `expiresAt` may be purged.
   */
  useNonce(nonce: string, expiresAt: number, now: number): Promise<boolean>;
}

/** How often expired sessions and nonces are swept, at most (by the writes themselves, no timer). */
const SWEEP_MS = 60_000;

export class KyselySessionStore implements SessionStore {
  /**
   * Nonces and sessions share commits: every agent that (re)connects writes one of each, and a
   * coordinator restart with 10,000 agents was 20,000 commits, each an fsync with the event loop
   * blocked on SQLite, while the agents' Hello and Authenticate calls timed out waiting.
   */
  readonly writes: GroupCommit;
  private sweptAt = { sessions: 0, nonces: 0 };

  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {
    this.writes = new GroupCommit(db, 256);
  }

  /** True (and remembers it) when `what` was last swept over SWEEP_MS before `now`. */
  private sweepDue(what: "sessions" | "nonces", now: number): boolean {
    if (now - this.sweptAt[what] < SWEEP_MS && now >= this.sweptAt[what]) return false;
    this.sweptAt[what] = now;
    return true;
  }

  async createSession(s: SessionRow): Promise<void> {
    // Expired sessions are useless; sweeping them now and then keeps the table small without a timer.
    const sweep = this.sweepDue("sessions", s.createdAt);
    await this.writes.run(async (trx) => {
      if (sweep) await trx.deleteFrom("sessions").where("expires_at", "<=", s.createdAt).execute();
      await claim(this.adapter, "session", () =>
        trx
          .insertInto("sessions")
          .values({
            token_hash: s.tokenHash,
            org_id: s.orgId,
            principal_kind: s.principalKind,
            principal_id: s.principalId,
            created_at: s.createdAt,
            expires_at: s.expiresAt,
          })
          .execute(),
      );
    });
  }

  async getSession(tokenHash: string, now: number): Promise<SessionRow | undefined> {
    const r = await this.db
      .selectFrom("sessions")
      .selectAll()
      .where("token_hash", "=", tokenHash)
      .where("expires_at", ">", now)
      .executeTakeFirst();
    return (
      r && {
        tokenHash: r.token_hash,
        orgId: r.org_id,
        principalKind: r.principal_kind as PrincipalKind,
        principalId: r.principal_id,
        createdAt: num(r.created_at),
        expiresAt: num(r.expires_at),
      }
    );
  }

  async deleteSessionsOf(kind: PrincipalKind, principalId: string): Promise<void> {
    await this.db.deleteFrom("sessions").where("principal_kind", "=", kind).where("principal_id", "=", principalId).execute();
  }

  async useNonce(nonce: string, expiresAt: number, now: number): Promise<boolean> {
    const sweep = this.sweepDue("nonces", now);
    return this.writes.run(async (trx) => {
      if (sweep) await trx.deleteFrom("nonces").where("expires_at", "<", now).execute();
      const r = await trx
        .insertInto("nonces")
        .values({ nonce, expires_at: expiresAt })
        .onConflict((oc) => oc.column("nonce").doNothing())
        .executeTakeFirst();
      return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
    });
  }
}
