/**
 * Logging in with an admin key (the first owner with the setup code), and asking who one is.
 * Password logins for the web UI are in web-login.ts.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { hashSecret, loginMessage, newId, nodeId, verifySignature, type adminv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { AdminKeyRow } from "../store/index.ts";
import { adminOf, remoteAddressKey } from "./principal.ts";
import { openSession } from "./sessions.ts";
import { callerKey } from "./rules.ts";
import { normalizeSetupCode } from "./setup-code.ts";

/** The organization the first owner gets. */
const FIRST_ORG_NAME = "default";

/** AdminService: Login and WhoAmI. */
export function loginMethods(ctx: ServiceContext): Pick<ServiceImpl<typeof adminv1.AdminService>, "login" | "whoAmI"> {
  const { store, challenges, log, auditor } = ctx;

  return {
    async login(req, hctx) {
      if (!verifySignature(req.publicKey, loginMessage(req.challenge), req.signature)) {
        throw new ConnectError("login signature does not verify", Code.Unauthenticated);
      }
      await challenges.consume(req.challenge);
      const now = Date.now();
      let key: AdminKeyRow | undefined;
      if (req.setupCode) {
        const boot = await store.access.bootstrapOwner({
          setupCodeHash: hashSecret(normalizeSetupCode(req.setupCode)),
          orgId: `org_${newId()}`,
          orgName: FIRST_ORG_NAME,
          member: { id: `mem_${newId()}`, name: req.keyName.slice(0, 64) || "owner", createdAt: now },
          key: { id: `key_${newId()}`, name: req.keyName.slice(0, 64) || "owner", publicKey: nodeId(req.publicKey), createdAt: now },
          now,
        });
        if (!boot) throw new ConnectError("setup code is wrong or was already used", Code.PermissionDenied);
        log.info("first owner registered", { org: boot.org.id, key: boot.key.id });
        key = boot.key;
      } else {
        const keys = await store.access.findAdminKeysByPublicKey(nodeId(req.publicKey));
        if (req.organization) {
          const org = (await store.access.getOrg(req.organization)) ?? (await store.access.getOrgByName(req.organization));
          key = keys.find((k) => k.orgId === org?.id);
          // The same answer whether the organization exists or not: nothing leaks across tenants.
          if (!key) throw new ConnectError(`this key is not registered in organization ${req.organization}`, Code.Unauthenticated);
        } else {
          key = keys[0];
        }
        if (!key) throw new ConnectError("this key is not registered as an admin key", Code.Unauthenticated);
      }
      const org = await store.access.getOrg(key.orgId);
      const session = await openSession(store, { kind: "admin", id: key.id, orgId: key.orgId }, ctx.sessionTtlMs);
      await auditor.record({ orgId: key.orgId, actor: `key:${key.name}`, action: "Login", target: key.id, source: hctx.values.get(remoteAddressKey), outcome: "ok", detail: "" });
      return {
        sessionToken: session.token,
        expiresAt: timestampFromMs(session.expiresAt),
        organization: { id: key.orgId, name: org?.name ?? "" },
        role: key.role,
      };
    },

    async whoAmI(_req, hctx) {
      const p = adminOf(hctx);
      const [org, key] = await Promise.all([store.access.getOrg(p.orgId), callerKey(store, p)]);
      return { organization: { id: p.orgId, name: org?.name ?? "" }, role: p.role, keyId: p.keyId ?? "", keyName: key?.name ?? p.actor };
    },
  };
}
