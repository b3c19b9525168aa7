import type { Kysely, Selectable } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import { num } from "../columns.ts";
import type { Database } from "../schema/schema.ts";

export interface AuditEntryRow {
  orgId: string;
  seq: number;
  time: number;
  actor: string;
  action: string;
  target: string;
  source: string;
  outcome: string;
  detail: string;
  prevHash: string;
  hash: string;
}

/** An audit entry before the store places it in the chain. */
export type NewAuditEntry = Omit<AuditEntryRow, "seq" | "prevHash" | "hash">;

/** Each organization's hash-chained audit log. */
export interface AuditStore {
  /**
   * Appends to the organization's audit chain in one transaction (serialized per organization):
   * `seal` receives the new entry's seq and the previous entry's hash ("" for the first) and
   * returns the new entry's hash.
   */
  appendAudit(entry: NewAuditEntry, seal: (seq: number, prevHash: string) => string): Promise<AuditEntryRow>;
  /** The chain's head as the last append left it; undefined before the first entry. */
  getAuditHead(orgId: string): Promise<{ seq: number; hash: string } | undefined>;
  /** Entries in seq order, optionally only from `since` and by `actor`, the newest `limit`. */
  listAudit(orgId: string, filter?: { since?: number; actor?: string; limit?: number; beforeSeq?: number }): Promise<AuditEntryRow[]>;
}

function toAudit(r: Selectable<Database["audit_log"]>): AuditEntryRow {
  return {
    orgId: r.org_id,
    seq: num(r.seq),
    time: num(r.time),
    actor: r.actor,
    action: r.action,
    target: r.target,
    source: r.source,
    outcome: r.outcome,
    detail: r.detail,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

export class KyselyAuditStore implements AuditStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {}

  async appendAudit(entry: NewAuditEntry, seal: (seq: number, prevHash: string) => string): Promise<AuditEntryRow> {
    return this.db.transaction().execute(async (trx) => {
      // The head row serializes appends per organization (a row lock on PostgreSQL; SQLite has
      // one writer at a time).
      await trx
        .insertInto("audit_heads")
        .values({ org_id: entry.orgId, seq: 0, hash: "" })
        .onConflict((oc) => oc.column("org_id").doNothing())
        .execute();
      let q = trx.selectFrom("audit_heads").selectAll().where("org_id", "=", entry.orgId);
      if (this.adapter.rowLocks) q = q.forUpdate();
      const head = await q.executeTakeFirstOrThrow();
      const seq = num(head.seq) + 1;
      const row: AuditEntryRow = { ...entry, seq, prevHash: head.hash, hash: seal(seq, head.hash) };
      await trx
        .insertInto("audit_log")
        .values({
          org_id: row.orgId,
          seq: row.seq,
          time: row.time,
          actor: row.actor,
          action: row.action,
          target: row.target,
          source: row.source,
          outcome: row.outcome,
          detail: row.detail,
          prev_hash: row.prevHash,
          hash: row.hash,
        })
        .execute();
      await trx.updateTable("audit_heads").set({ seq, hash: row.hash }).where("org_id", "=", entry.orgId).execute();
      return row;
    });
  }

  async getAuditHead(orgId: string): Promise<{ seq: number; hash: string } | undefined> {
    const r = await this.db.selectFrom("audit_heads").selectAll().where("org_id", "=", orgId).executeTakeFirst();
    return r && { seq: num(r.seq), hash: r.hash };
  }

  async listAudit(orgId: string, filter: { since?: number; actor?: string; limit?: number; beforeSeq?: number } = {}): Promise<AuditEntryRow[]> {
    let q = this.db.selectFrom("audit_log").selectAll().where("org_id", "=", orgId);
    if (filter.beforeSeq !== undefined) q = q.where("seq", "<", filter.beforeSeq);
    if (filter.since !== undefined) q = q.where("time", ">=", filter.since);
    if (filter.actor) q = q.where("actor", "=", filter.actor);
    const rows = await q.orderBy("seq", "desc").limit(filter.limit ?? 1_000_000).execute();
    return rows.map(toAudit).reverse();
  }
}
