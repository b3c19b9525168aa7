import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { adminv1 } from "@flotilla/protocol";
import { adminOf } from "../access/principal.ts";
import { auditToProto } from "../access/views.ts";
import type { ServiceContext } from "../context.ts";

/** AdminService: reading the organization's audit log and checking its hash chain. */
export function auditMethods(ctx: ServiceContext): Pick<ServiceImpl<typeof adminv1.AdminService>, "listAuditEntries" | "verifyAuditLog"> {
  const { store, auditor } = ctx;
  return {
    async listAuditEntries(req, hctx) {
      const { orgId } = adminOf(hctx);
      const limit = Math.min(req.limit || 1000, 10_000);
      const entries = await store.audit.listAudit(orgId, {
        since: req.since ? timestampMs(req.since) : undefined,
        actor: req.actor || undefined,
        limit,
      });
      return { entries: entries.map(auditToProto) };
    },

    async verifyAuditLog(_req, hctx) {
      const verdict = await auditor.verify(adminOf(hctx).orgId);
      return verdict.ok
        ? { ok: true, entries: BigInt(verdict.entries) }
        : { ok: false, entries: BigInt(verdict.entries), firstBadSeq: BigInt(verdict.firstBadSeq), problem: verdict.problem };
    },
  };
}
