import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
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
      let beforeSeq: number | undefined;
      if (req.pageToken) {
        beforeSeq = Number(req.pageToken);
        if (!Number.isSafeInteger(beforeSeq) || beforeSeq < 1) throw new ConnectError("invalid page_token: pass next_page_token of the previous page", Code.InvalidArgument);
      }
      // One more than asked: whether older entries were left out, so no caller is cut silently.
      const entries = await store.audit.listAudit(orgId, {
        since: req.since ? timestampMs(req.since) : undefined,
        actor: req.actor || undefined,
        limit: limit + 1,
        beforeSeq,
      });
      const more = entries.length > limit;
      const page = more ? entries.slice(1) : entries;
      return { entries: page.map(auditToProto), nextPageToken: more && page[0] ? String(page[0].seq) : "" };
    },

    async verifyAuditLog(_req, hctx) {
      const verdict = await auditor.verify(adminOf(hctx).orgId);
      return verdict.ok
        ? { ok: true, entries: BigInt(verdict.entries) }
        : { ok: false, entries: BigInt(verdict.entries), firstBadSeq: BigInt(verdict.firstBadSeq), problem: verdict.problem };
    },
  };
}
