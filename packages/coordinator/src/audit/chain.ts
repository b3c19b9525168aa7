/**
 * The audit log's hash chain. Each entry's hash covers the previous entry's hash and every field
 * of the entry, so editing an entry breaks its own hash and deleting one breaks the next link:
 * `verifyChain` names the first entry that does not verify.
 */
import { createHash } from "node:crypto";
import type { AuditEntryRow, NewAuditEntry } from "../store/index.ts";

/** sha256 hex over the previous hash and a canonical encoding of the entry. */
export function entryHash(prevHash: string, seq: number, e: NewAuditEntry): string {
  const canonical = JSON.stringify([
    "flotilla/audit/v1",
    prevHash,
    e.orgId,
    seq,
    e.time,
    e.actor,
    e.action,
    e.target,
    e.source,
    e.outcome,
    e.detail,
  ]);
  return createHash("sha256").update(canonical).digest("hex");
}

export type ChainVerdict =
  | { ok: true; entries: number }
  | { ok: false; entries: number; firstBadSeq: number; problem: string };

/**
 * Checks a whole chain, in seq order from 1. `headSeq`/`headHash`, when given, are the stored
 * head: they catch entries deleted from the end.
 */
export function verifyChain(entries: AuditEntryRow[], head?: { seq: number; hash: string }): ChainVerdict {
  let prev = "";
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const expectedSeq = i + 1;
    if (e.seq !== expectedSeq) {
      return { ok: false, entries: entries.length, firstBadSeq: expectedSeq, problem: `entry ${expectedSeq} is missing` };
    }
    if (e.prevHash !== prev) {
      return { ok: false, entries: entries.length, firstBadSeq: e.seq, problem: `entry ${e.seq} does not link to entry ${e.seq - 1}` };
    }
    if (entryHash(prev, e.seq, e) !== e.hash) {
      return { ok: false, entries: entries.length, firstBadSeq: e.seq, problem: `entry ${e.seq} was altered` };
    }
    prev = e.hash;
  }
  if (head && (head.seq !== entries.length || head.hash !== prev)) {
    const seq = entries.length + 1;
    return { ok: false, entries: entries.length, firstBadSeq: seq, problem: `entries from ${seq} on were deleted` };
  }
  return { ok: true, entries: entries.length };
}
