/** Join tokens: what an admin hands a new machine so that its agent may enroll (agent-service.ts). */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { adminv1, encodeJoinString, hashSecret, keyPin, newId, newSecret } from "@flotilla/protocol";
import { adminOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { JoinTokenRow } from "../store/index.ts";
import { validateLabels } from "./labels.ts";

const MAX_TOKEN_SECONDS = 365 * 24 * 3600;

function tokenToProto(t: JoinTokenRow): adminv1.JoinToken {
  return create(adminv1.JoinTokenSchema, {
    id: t.id,
    labels: t.labels,
    usesAllowed: t.usesAllowed,
    uses: t.uses,
    expiresAt: timestampFromMs(t.expiresAt),
    autoApprove: t.autoApprove,
    createdAt: timestampFromMs(t.createdAt),
    revoked: t.revokedAt !== null,
  });
}

/** AdminService: creating, listing and revoking join tokens. */
export function joinTokenMethods(ctx: ServiceContext): Pick<ServiceImpl<typeof adminv1.AdminService>, "createJoinToken" | "listJoinTokens" | "revokeJoinToken"> {
  const { store, log } = ctx;
  return {
    async createJoinToken(req, hctx) {
      const p = adminOf(hctx);
      validateLabels(req.labels);
      const seconds = Number(req.expiresInSeconds || 24n * 3600n);
      if (seconds <= 0 || seconds > MAX_TOKEN_SECONDS) {
        throw new ConnectError("expiry must be between 1 second and 365 days", Code.InvalidArgument);
      }
      const url = req.coordinatorUrl || ctx.publicUrl;
      if (!/^https?:\/\/[^\s/]+$/.test(url)) throw new ConnectError("coordinator_url must be http(s)://host:port", Code.InvalidArgument);
      const now = Date.now();
      const secret = newSecret(24);
      const row: JoinTokenRow = {
        id: newId(10),
        orgId: p.orgId,
        secretHash: hashSecret(secret),
        labels: req.labels,
        usesAllowed: req.usesAllowed,
        uses: 0,
        expiresAt: now + seconds * 1000,
        autoApprove: req.autoApprove,
        createdAt: now,
        revokedAt: null,
      };
      await store.devices.createJoinToken(row);
      log.info("join token created", { token: row.id, by: p.keyId });
      return {
        token: tokenToProto(row),
        joinString: encodeJoinString({ url, pin: keyPin(ctx.identity.publicKey), secret: `${row.id}.${secret}` }),
      };
    },

    async listJoinTokens(_req, hctx) {
      return { tokens: (await store.devices.listJoinTokens(adminOf(hctx).orgId)).map(tokenToProto) };
    },

    async revokeJoinToken(req, hctx) {
      if (!(await store.devices.revokeJoinToken(adminOf(hctx).orgId, req.id, Date.now()))) {
        throw new ConnectError(`no join token ${JSON.stringify(req.id)}`, Code.NotFound);
      }
      return {};
    },
  };
}
