import type { Kysely, Transaction } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import type { Database } from "../schema/schema.ts";
import { num } from "../columns.ts";

/** An organization's storage: bytes it is charged for, and bytes its unfinished uploads hold. */
export interface StorageUsage {
  usedBytes: number;
  reservedBytes: number;
}

/** Room held for one unfinished upload of an organization. */
export interface StorageReservationRow {
  orgId: string;
  /** Names the upload, e.g. `artifact:<sha256>:<length>`; its kind is the part before the first colon. */
  uploadKey: string;
  bytes: number;
  createdAt: number;
  /** When the upload last began or resumed. */
  touchedAt: number;
}

/** What an organization is charged for: one artifact or NAR, by its key (a sha256). */
export interface StorageCharge {
  kind: "artifact" | "nar";
  key: string;
  bytes: number;
}

export type ReserveResult = { ok: true } | { ok: false; usage: StorageUsage };

/**
 * Per-organization storage accounting. Every organization has one counter row (used and reserved
 * bytes) changed in the same transaction as the charge or reservation it sums, so a quota check
 * reads one row, and concurrent uploads (on every replica) are serialized on it: each reserves
 * its room before writing a byte, and the reservations never together pass the quota.
 */
export interface StorageStore {
  usage(orgId: string): Promise<StorageUsage>;
  reservation(orgId: string, uploadKey: string): Promise<StorageReservationRow | undefined>;
  /** Whether the organization is charged for this object already. */
  charged(orgId: string, kind: StorageCharge["kind"], key: string): Promise<boolean>;
  /**
   * Holds at least `bytes` for the upload: creates its reservation or grows it (never shrinks
   * it), and marks it touched. Refused, with nothing changed, when the growth would take the
   * organization's used plus reserved bytes past `quota` (null: no quota).
   */
  reserve(orgId: string, uploadKey: string, bytes: number, quota: number | null, now: number): Promise<ReserveResult>;
  /** Gives the upload's reserved room back; false when it held none. */
  release(orgId: string, uploadKey: string): Promise<boolean>;
  /**
   * Ends the upload's reservation and charges the organization for `charge`, once: an object it
   * is charged for already is not charged again. Returns whether it was charged now.
   */
  commit(orgId: string, uploadKey: string, charge: StorageCharge, now: number): Promise<boolean>;
  /** Ends the organization's charge for the object and gives its bytes back; returns them (0: it was not charged). */
  uncharge(orgId: string, kind: StorageCharge["kind"], key: string): Promise<number>;
  /**
   * Reservations (of every organization) whose key starts with `keyPrefix` (lowercase letters,
   * digits and colons) and that were last
   * touched before `touchedBefore`, oldest first, at most `limit`: abandoned uploads, for a sweep.
   */
  staleReservations(keyPrefix: string, touchedBefore: number, limit: number): Promise<StorageReservationRow[]>;
}

type Trx = Transaction<Database>;

export class KyselyStorageStore implements StorageStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {}

  async usage(orgId: string): Promise<StorageUsage> {
    const r = await this.db.selectFrom("storage_usage").select(["used_bytes", "reserved_bytes"]).where("org_id", "=", orgId).executeTakeFirst();
    return { usedBytes: r ? num(r.used_bytes) : 0, reservedBytes: r ? num(r.reserved_bytes) : 0 };
  }

  async reservation(orgId: string, uploadKey: string): Promise<StorageReservationRow | undefined> {
    const r = await this.db.selectFrom("storage_reservations").selectAll().where("org_id", "=", orgId).where("upload_key", "=", uploadKey).executeTakeFirst();
    return r && toReservation(r);
  }

  async charged(orgId: string, kind: StorageCharge["kind"], key: string): Promise<boolean> {
    const r = await this.db
      .selectFrom("storage_charges")
      .select("bytes")
      .where("org_id", "=", orgId)
      .where("kind", "=", kind)
      .where("object_key", "=", key)
      .executeTakeFirst();
    return r !== undefined;
  }

  /** The organization's counter row, created when missing and locked until the transaction ends (PostgreSQL; SQLite has one writer). */
  private async lockUsage(trx: Trx, orgId: string): Promise<StorageUsage> {
    await trx.insertInto("storage_usage").values({ org_id: orgId, used_bytes: 0, reserved_bytes: 0 }).onConflict((oc) => oc.column("org_id").doNothing()).execute();
    let q = trx.selectFrom("storage_usage").select(["used_bytes", "reserved_bytes"]).where("org_id", "=", orgId);
    if (this.adapter.rowLocks) q = q.forUpdate();
    const r = await q.executeTakeFirstOrThrow();
    return { usedBytes: num(r.used_bytes), reservedBytes: num(r.reserved_bytes) };
  }

  private async add(trx: Trx, orgId: string, used: number, reserved: number): Promise<void> {
    if (used === 0 && reserved === 0) return;
    await trx
      .updateTable("storage_usage")
      .set((eb) => ({ used_bytes: eb("used_bytes", "+", used), reserved_bytes: eb("reserved_bytes", "+", reserved) }))
      .where("org_id", "=", orgId)
      .execute();
  }

  /** Deletes the upload's reservation; returns the bytes it held (0: none). */
  private async drop(trx: Trx, orgId: string, uploadKey: string): Promise<number> {
    const r = await trx.deleteFrom("storage_reservations").where("org_id", "=", orgId).where("upload_key", "=", uploadKey).returning("bytes").executeTakeFirst();
    return r ? num(r.bytes) : 0;
  }

  reserve(orgId: string, uploadKey: string, bytes: number, quota: number | null, now: number): Promise<ReserveResult> {
    return this.db.transaction().execute(async (trx) => {
      const usage = await this.lockUsage(trx, orgId);
      const held = await trx
        .selectFrom("storage_reservations")
        .select("bytes")
        .where("org_id", "=", orgId)
        .where("upload_key", "=", uploadKey)
        .executeTakeFirst();
      const growth = Math.max(0, bytes - (held ? num(held.bytes) : 0));
      if (growth > 0 && quota !== null && usage.usedBytes + usage.reservedBytes + growth > quota) return { ok: false, usage };
      if (held) {
        await trx
          .updateTable("storage_reservations")
          .set((eb) => ({ bytes: eb("bytes", "+", growth), touched_at: now }))
          .where("org_id", "=", orgId)
          .where("upload_key", "=", uploadKey)
          .execute();
      } else {
        await trx.insertInto("storage_reservations").values({ org_id: orgId, upload_key: uploadKey, bytes, created_at: now, touched_at: now }).execute();
      }
      await this.add(trx, orgId, 0, growth);
      return { ok: true };
    });
  }

  release(orgId: string, uploadKey: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      await this.lockUsage(trx, orgId);
      const held = await this.drop(trx, orgId, uploadKey);
      await this.add(trx, orgId, 0, -held);
      return held > 0;
    });
  }

  commit(orgId: string, uploadKey: string, charge: StorageCharge, now: number): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      await this.lockUsage(trx, orgId);
      const held = await this.drop(trx, orgId, uploadKey);
      const r = await trx
        .insertInto("storage_charges")
        .values({ org_id: orgId, kind: charge.kind, object_key: charge.key, bytes: charge.bytes, created_at: now })
        .onConflict((oc) => oc.columns(["org_id", "kind", "object_key"]).doNothing())
        .executeTakeFirst();
      const charged = Number(r.numInsertedOrUpdatedRows ?? 0) > 0;
      await this.add(trx, orgId, charged ? charge.bytes : 0, -held);
      return charged;
    });
  }

  uncharge(orgId: string, kind: StorageCharge["kind"], key: string): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      await this.lockUsage(trx, orgId);
      const r = await trx
        .deleteFrom("storage_charges")
        .where("org_id", "=", orgId)
        .where("kind", "=", kind)
        .where("object_key", "=", key)
        .returning("bytes")
        .executeTakeFirst();
      const bytes = r ? num(r.bytes) : 0;
      await this.add(trx, orgId, -bytes, 0);
      return bytes;
    });
  }

  async staleReservations(keyPrefix: string, touchedBefore: number, limit: number): Promise<StorageReservationRow[]> {
    if (!/^[a-z0-9:]*$/.test(keyPrefix)) throw new Error("a reservation key prefix is lowercase letters, digits and colons");
    const rows = await this.db
      .selectFrom("storage_reservations")
      .selectAll()
      .where("touched_at", "<", touchedBefore)
      .where("upload_key", "like", `${keyPrefix}%`)
      .orderBy("touched_at")
      .limit(limit)
      .execute();
    return rows.map(toReservation);
  }
}

function toReservation(r: { org_id: string; upload_key: string; bytes: number; created_at: number; touched_at: number }): StorageReservationRow {
  return { orgId: r.org_id, uploadKey: r.upload_key, bytes: num(r.bytes), createdAt: num(r.created_at), touchedAt: num(r.touched_at) };
}
