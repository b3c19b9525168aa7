/** API tokens: long-lived bearer secrets with a role, for scripts and CI. */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { hashSecret, newId, newSecret, type adminv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { ApiTokenRow } from "../store/index.ts";
import { API_TOKEN_PREFIX } from "./interceptor.ts";
import { adminOf } from "./principal.ts";
import { MEMBER_NAME, parseRole, requireGrant } from "./rules.ts";
import { apiTokenToProto } from "./views.ts";

const MAX_API_TOKEN_SECONDS = 365 * 24 * 3600;
const DEFAULT_API_TOKEN_SECONDS = 90 * 24 * 3600;

/** AdminService: creating, listing and revoking API tokens. */
export function apiTokenMethods(ctx: ServiceContext): Pick<ServiceImpl<typeof adminv1.AdminService>, "createApiToken" | "listApiTokens" | "revokeApiToken"> {
  const { store } = ctx;
  return {
    async createApiToken(req, hctx) {
      const p = adminOf(hctx);
      if (!MEMBER_NAME.test(req.name)) throw new ConnectError("an API token needs a name (letters, digits, . _ @ + -)", Code.InvalidArgument);
      const role = parseRole(req.role, "deployer");
      requireGrant(p, role);
      const seconds = Number(req.expiresInSeconds || BigInt(DEFAULT_API_TOKEN_SECONDS));
      if (seconds <= 0 || seconds > MAX_API_TOKEN_SECONDS) {
        throw new ConnectError("expiry must be between 1 second and 365 days", Code.InvalidArgument);
      }
      const now = Date.now();
      const secret = newSecret();
      const row: ApiTokenRow = {
        id: newId(12),
        orgId: p.orgId,
        name: req.name,
        role,
        secretHash: hashSecret(secret),
        createdBy: p.actor,
        createdAt: now,
        expiresAt: now + seconds * 1000,
        revokedAt: null,
      };
      await store.access.createApiToken(row);
      return { token: apiTokenToProto(row), secret: `${API_TOKEN_PREFIX}${row.id}.${secret}` };
    },

    async listApiTokens(_req, hctx) {
      return { tokens: (await store.access.listApiTokens(adminOf(hctx).orgId)).map(apiTokenToProto) };
    },

    async revokeApiToken(req, hctx) {
      const p = adminOf(hctx);
      const token = (await store.access.listApiTokens(p.orgId)).find((t) => t.revokedAt === null && (t.id === req.token || t.name === req.token));
      if (!token) throw new ConnectError(`no API token ${JSON.stringify(req.token)}`, Code.NotFound);
      requireGrant(p, token.role);
      await store.access.revokeApiToken(p.orgId, token.id, Date.now());
      return {};
    },
  };
}
