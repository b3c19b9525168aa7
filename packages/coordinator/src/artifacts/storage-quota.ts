import { startPeriodic, type Periodic, type PeriodicLease } from "../server/periodic.ts";
import type { Logger } from "@flotilla/protocol";
import type { CoordinatorConfig } from "../config.ts";
import { HttpError } from "../server/http.ts";
import type { StorageCharge, StorageReservationRow, Store } from "../store/index.ts";
import { formatBytes } from "./byte-size.ts";

/**
 * An upload refused because the organization's storage quota has no room for it: HTTP 413
 * Content Too Large. (WebDAV's 507 Insufficient Storage would fit too, but clients such as
 * `nix copy` take a 5xx for a passing failure and retry it; a quota stays full until someone acts.)
 */
export class QuotaError extends HttpError {
  override name = "QuotaError";
  constructor(message: string) {
    super(413, message);
  }
}

/** The quota options of the coordinator's configuration. */
export type QuotaConfig = Pick<CoordinatorConfig, "storageQuota" | "storageQuotaOrgs">;

/**
 * Each organization's storage quota, kept for artifact and NAR uploads alike: an upload reserves
 * its room (its declared length, or what has arrived of a streamed one) before a byte of it is
 * written, and is refused with a {@link QuotaError} when the organization's stored bytes plus
 * every unfinished upload's reservation would pass the quota. A finished upload's reservation
 * becomes a charge, once per object however often the organization uploads it; a failed or
 * abandoned one gives its room back. The counts live in the store (one row per organization),
 * so replicas sharing a database share them.
 */
export class StorageQuotas {
  constructor(
    private readonly store: Pick<Store, "storage" | "access">,
    private readonly config: QuotaConfig,
    private readonly now: () => number = Date.now,
  ) {}

  /** The organization's name (for messages) and quota in bytes (null: none). */
  private async quotaOf(orgId: string): Promise<{ name: string; quota: number | null }> {
    const org = await this.store.access.getOrg(orgId);
    const name = org?.name ?? orgId;
    // Own keys only: an organization named "constructor" must not find Object's.
    const orgs = this.config.storageQuotaOrgs;
    const key = [orgId, name].find((k) => Object.hasOwn(orgs, k));
    const given = key === undefined ? this.config.storageQuota : orgs[key]!;
    return { name, quota: given > 0 ? given : null };
  }

  private refusal(name: string, quota: number, bytes: number, usage: { usedBytes: number; reservedBytes: number }, held: number): QuotaError {
    const reserved = usage.reservedBytes - held;
    return new QuotaError(
      `this upload of ${formatBytes(bytes)} would pass organization ${name}'s storage quota of ${formatBytes(quota)}: ` +
        `${formatBytes(usage.usedBytes + reserved)} is in use (${formatBytes(reserved)} of it by unfinished uploads)`,
    );
  }

  /**
   * Holds `bytes` for the organization's upload `key` (more if it held less; a resume holds
   * nothing more). Throws a QuotaError, holding nothing more, when they do not fit.
   */
  async reserve(orgId: string, key: string, bytes: number): Promise<void> {
    const { name, quota } = await this.quotaOf(orgId);
    const r = await this.store.storage.reserve(orgId, key, bytes, quota, this.now());
    if (!r.ok) {
      const held = (await this.store.storage.reservation(orgId, key))?.bytes ?? 0;
      throw this.refusal(name, quota ?? 0, bytes, r.usage, held);
    }
  }

  /** Throws the QuotaError {@link reserve} would, without holding anything: for a client asking before it uploads. */
  async check(orgId: string, key: string, bytes: number): Promise<void> {
    const { name, quota } = await this.quotaOf(orgId);
    if (quota === null) return;
    const usage = await this.store.storage.usage(orgId);
    const held = (await this.store.storage.reservation(orgId, key))?.bytes ?? 0;
    if (usage.usedBytes + usage.reservedBytes + Math.max(0, bytes - held) > quota) throw this.refusal(name, quota, bytes, usage, held);
  }

  /** Whether the organization is charged for this object already: storing it again costs nothing. */
  charged(orgId: string, kind: StorageCharge["kind"], key: string): Promise<boolean> {
    return this.store.storage.charged(orgId, kind, key);
  }

  /** Gives the upload's room back (it failed, or was abandoned). */
  async release(orgId: string, key: string): Promise<void> {
    await this.store.storage.release(orgId, key);
  }

  /** The upload is complete: its reservation becomes a charge for `charge` (none if charged before). */
  async commit(orgId: string, key: string, charge: StorageCharge): Promise<void> {
    await this.store.storage.commit(orgId, key, charge, this.now());
  }

  /** Reservations of uploads under `prefix` last begun or resumed before `before`: candidates for a sweep. */
  stale(prefix: string, before: number, limit: number): Promise<StorageReservationRow[]> {
    return this.store.storage.staleReservations(prefix, before, limit);
  }
}

/** Most of a sweep's work in one run; the rest waits for the next. */
export const SWEEP_LIMIT = 1000;

/** A periodic sweep of abandoned uploads, started by {@link startSweeper}. */
export type Sweeper = Periodic;

/**
 * Runs `sweep` now (and waits for it), then every `intervalMs` while none is under way. Errors
 * are logged, never thrown: a sweep that fails is tried again on the next tick.
 */
export function startSweeper(what: string, sweep: () => Promise<number>, intervalMs: number, log: Logger, lease?: PeriodicLease): Promise<Sweeper> {
  const task = async () => {
    const removed = await sweep();
    if (removed > 0) log.info(`removed abandoned ${what}`, { count: removed });
  };
  return startPeriodic(task, intervalMs, log, `could not remove abandoned ${what}`, { runNow: true, ...(lease ? { lease } : {}) });
}

/** How often to sweep for uploads abandoned after `staleAfterMs`: a quarter of it, from a tenth of a second to an hour. */
export function sweepIntervalMs(staleAfterMs: number): number {
  return Math.min(3_600_000, Math.max(100, Math.floor(staleAfterMs / 4)));
}
