import type { Logger } from "@flotilla/protocol";
import type { AuditEntryRow, NewAuditEntry, Store } from "../store/index.ts";
import { entryHash, verifyChain, type ChainVerdict } from "./chain.ts";

const MAX_FIELD = 512;

/** Writes and checks organizations' audit chains. */
export class Auditor {
  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  /** Appends an entry; a failure to audit is logged loudly, never swallowed silently. */
  async record(entry: Omit<NewAuditEntry, "time"> & { time?: number }): Promise<AuditEntryRow | undefined> {
    const e: NewAuditEntry = {
      orgId: entry.orgId,
      time: entry.time ?? Date.now(),
      actor: entry.actor.slice(0, MAX_FIELD),
      action: entry.action.slice(0, MAX_FIELD),
      target: entry.target.slice(0, MAX_FIELD),
      source: entry.source.slice(0, MAX_FIELD),
      outcome: entry.outcome.slice(0, MAX_FIELD),
      detail: entry.detail.slice(0, 4 * MAX_FIELD),
    };
    try {
      return await this.store.audit.appendAudit(e, (seq, prev) => entryHash(prev, seq, e));
    } catch (err) {
      this.log.error("could not write audit entry", { org: e.orgId, action: e.action, err: String(err) });
      return undefined;
    }
  }

  async verify(orgId: string): Promise<ChainVerdict> {
    const [entries, head] = await Promise.all([this.store.audit.listAudit(orgId), this.store.audit.getAuditHead(orgId)]);
    return verifyChain(entries, head);
  }
}

/** What a control command asked of its target, e.g. "restart app" (ControlRelease); "" for other calls. */
export function auditDetail(message: unknown): string {
  if (!message || typeof message !== "object") return "";
  const m = message as Record<string, unknown>;
  if (typeof m.toOrganization === "string" && m.toOrganization) return `to organization ${m.toOrganization}${m.prepare === true ? " (prepare)" : ""}`;
  if (typeof m.action !== "string" || typeof m.name !== "string" || !m.action) return "";
  return `${m.action} ${m.name}${m.purgeData === true ? " (purge data)" : ""}`;
}

/** The target of a call, read from its request: the first of these fields that is set. */
export function auditTarget(message: unknown): string {
  if (!message || typeof message !== "object") return "";
  const m = message as Record<string, unknown>;
  for (const field of ["device", "member", "key", "token", "id", "name", "publicKey", "selector"]) {
    const v = m[field];
    if (typeof v === "string" && v) return v;
  }
  return "";
}
