/**
 * Access control over the admin API: logins, organizations, members, admin keys, API tokens and
 * the audit log. Which role may call what is decided by auth/policy.ts alone; these handlers
 * check only what depends on the data (no one grants a role above their own, the last owner
 * stays).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  adminv1,
  fingerprint,
  hashSecret,
  loginMessage,
  newId,
  newSecret,
  nodeId,
  parseAnyPublicKey,
  parseNodeId,
  verifySignature,
} from "@flotilla/protocol";
import { API_TOKEN_PREFIX } from "../auth/interceptor.ts";
import { checkPasswordPolicy, hashPassword } from "../auth/password.ts";
import { mayGrant, roleOrder } from "../auth/policy.ts";
import { adminOf, remoteAddressKey, type AdminPrincipal } from "../auth/principal.ts";
import { openSession } from "../auth/sessions.ts";
import type { ServiceContext } from "../context.ts";
import type { AdminKeyRow, ApiTokenRow, AuditEntryRow, MemberRow, OrgRow, Role } from "../store/index.ts";

const FIRST_ORG_NAME = "default";
const ORG_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const MEMBER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;
const MAX_API_TOKEN_SECONDS = 365 * 24 * 3600;
const DEFAULT_API_TOKEN_SECONDS = 90 * 24 * 3600;

/** Setup codes are shown grouped (ABCD-EFGH-...); accept them with or without dashes, any case. */
export function normalizeSetupCode(code: string): string {
  return code.toUpperCase().replace(/[^A-Z0-9]/g, "");
}

function parseRole(text: string, fallback: Role): Role {
  const role = (text || fallback) as Role;
  if (!roleOrder.includes(role)) {
    throw new ConnectError(`unknown role ${JSON.stringify(text)}: owner, admin, deployer or viewer`, Code.InvalidArgument);
  }
  return role;
}

function requireGrant(p: AdminPrincipal, role: Role): void {
  if (!mayGrant(p.role, role)) throw new ConnectError(`a ${p.role} cannot grant or take away the ${role} role`, Code.PermissionDenied);
}

function parseKey(text: string): Uint8Array {
  try {
    return parseAnyPublicKey(text.slice(0, 4096));
  } catch (err) {
    throw new ConnectError((err as Error).message, Code.InvalidArgument);
  }
}

function keyToProto(k: AdminKeyRow, member?: MemberRow): adminv1.AdminKey {
  return create(adminv1.AdminKeySchema, {
    id: k.id,
    name: k.name,
    publicKey: parseNodeId(k.publicKey),
    role: k.role,
    createdAt: timestampFromMs(k.createdAt),
    member: member?.name ?? "",
  });
}

function memberToProto(m: MemberRow, keys: number): adminv1.Member {
  return create(adminv1.MemberSchema, {
    id: m.id,
    name: m.name,
    role: m.role,
    createdAt: timestampFromMs(m.createdAt),
    hasPassword: m.passwordHash !== null,
    keys,
  });
}

function apiTokenToProto(t: ApiTokenRow): adminv1.ApiToken {
  return create(adminv1.ApiTokenSchema, {
    id: t.id,
    name: t.name,
    role: t.role,
    createdAt: timestampFromMs(t.createdAt),
    expiresAt: timestampFromMs(t.expiresAt),
    revoked: t.revokedAt !== null,
    createdBy: t.createdBy,
  });
}

function auditToProto(e: AuditEntryRow): adminv1.AuditEntry {
  return create(adminv1.AuditEntrySchema, {
    seq: BigInt(e.seq),
    time: timestampFromMs(e.time),
    actor: e.actor,
    action: e.action,
    target: e.target,
    source: e.source,
    outcome: e.outcome,
    detail: e.detail,
    hash: e.hash,
  });
}

type AccessMethods = Omit<
  ServiceImpl<typeof adminv1.AdminService>,
  | "hello"
  | "createJoinToken"
  | "listJoinTokens"
  | "revokeJoinToken"
  | "listDevices"
  | "getDevice"
  | "approveDevice"
  | "rejectDevice"
  | "decommissionDevice"
  | "updateDeviceLabels"
>;

export function accessMethods(ctx: ServiceContext): AccessMethods {
  const { store, challenges, log, auditor } = ctx;

  async function findMember(orgId: string, ref: string): Promise<MemberRow> {
    const m = (await store.access.getMember(orgId, ref)) ?? (await store.access.getMemberByName(orgId, ref));
    if (!m || m.removedAt !== null) throw new ConnectError(`no member ${JSON.stringify(ref)}`, Code.NotFound);
    return m;
  }

  async function callerKey(p: AdminPrincipal): Promise<AdminKeyRow | undefined> {
    return p.keyId ? store.access.getAdminKey(p.orgId, p.keyId) : undefined;
  }

  async function newMember(orgId: string, name: string, role: Role, passwordHash: string | null): Promise<MemberRow> {
    if (!MEMBER_NAME.test(name)) throw new ConnectError(`invalid member name ${JSON.stringify(name)}`, Code.InvalidArgument);
    const member: MemberRow = { id: `mem_${newId()}`, orgId, name, role, passwordHash, createdAt: Date.now(), removedAt: null };
    if (await store.access.getMemberByName(orgId, name)) throw new ConnectError(`a member named ${name} already exists`, Code.AlreadyExists);
    await store.access.addMember(member);
    return member;
  }

  async function addKey(member: MemberRow, raw: Uint8Array, name: string): Promise<AdminKeyRow> {
    const existing = await store.access.listAdminKeys(member.orgId);
    if (existing.some((k) => k.publicKey === nodeId(raw))) {
      throw new ConnectError("this key is already registered in this organization", Code.AlreadyExists);
    }
    const key = { id: `key_${newId()}`, orgId: member.orgId, memberId: member.id, name: name.slice(0, 64) || member.name, publicKey: nodeId(raw), createdAt: Date.now(), revokedAt: null };
    await store.access.addAdminKey(key);
    return { ...key, role: member.role };
  }

  async function ensureNotLastOwner(orgId: string, leaving: MemberRow): Promise<void> {
    if (leaving.role !== "owner") return;
    const owners = (await store.access.listMembers(orgId)).filter((m) => m.role === "owner");
    if (owners.length <= 1) throw new ConnectError("the last owner cannot be removed", Code.FailedPrecondition);
  }

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
      const [org, key] = await Promise.all([store.access.getOrg(p.orgId), callerKey(p)]);
      return { organization: { id: p.orgId, name: org?.name ?? "" }, role: p.role, keyId: p.keyId ?? "", keyName: key?.name ?? p.actor };
    },

    async addAdminKey(req, hctx) {
      const p = adminOf(hctx);
      const raw = parseKey(req.publicKey);
      let member: MemberRow;
      if (req.member) {
        member = await findMember(p.orgId, req.member);
      } else {
        const role = parseRole(req.role, "admin");
        requireGrant(p, role);
        member = await newMember(p.orgId, req.name || "admin", role, null);
      }
      requireGrant(p, member.role);
      const key = await addKey(member, raw, req.name);
      log.info("admin key added", { key: key.id, member: member.name, by: p.actor });
      return { key: keyToProto(key, member) };
    },

    async listAdminKeys(_req, hctx) {
      const { orgId } = adminOf(hctx);
      const [keys, members] = await Promise.all([store.access.listAdminKeys(orgId), store.access.listMembers(orgId)]);
      return { keys: keys.map((k) => keyToProto(k, members.find((m) => m.id === k.memberId))) };
    },

    async revokeAdminKey(req, hctx) {
      const p = adminOf(hctx);
      const key = (await store.access.listAdminKeys(p.orgId)).find((k) => k.id === req.key || fingerprint(parseNodeId(k.publicKey)) === req.key);
      if (!key) throw new ConnectError(`no admin key ${JSON.stringify(req.key)}`, Code.NotFound);
      requireGrant(p, key.role);
      await store.access.revokeAdminKey(p.orgId, key.id, Date.now());
      await store.sessions.deleteSessionsOf("admin", key.id);
      return {};
    },

    async createOrganization(req, hctx) {
      const p = adminOf(hctx);
      if (!ORG_NAME.test(req.name)) {
        throw new ConnectError("organization names are lowercase letters, digits and dashes", Code.InvalidArgument);
      }
      const key = await callerKey(p);
      if (!key) throw new ConnectError("only an admin key can create an organization (not an API token or a password login)", Code.FailedPrecondition);
      if (await store.access.getOrgByName(req.name)) throw new ConnectError(`organization name ${req.name} is taken`, Code.AlreadyExists);
      const now = Date.now();
      const org: OrgRow = { id: `org_${newId()}`, name: req.name, createdAt: now };
      await store.access.createOrg(org);
      const creator = await findMember(p.orgId, key.memberId);
      const member = await newMember(org.id, creator.name, "owner", null);
      await addKey(member, parseNodeId(key.publicKey), key.name);
      await auditor.record({ orgId: org.id, actor: p.actor, action: "CreateOrganization", target: org.name, source: hctx.values.get(remoteAddressKey), outcome: "ok", detail: "" });
      return { organization: { id: org.id, name: org.name } };
    },

    async listOrganizations(_req, hctx) {
      const p = adminOf(hctx);
      const key = await callerKey(p);
      const regs = key ? await store.access.findAdminKeysByPublicKey(key.publicKey) : [];
      const entries = regs.length > 0 ? regs.map((k) => ({ orgId: k.orgId, role: k.role })) : [{ orgId: p.orgId, role: p.role }];
      const orgs = await Promise.all(entries.map((e) => store.access.getOrg(e.orgId)));
      return {
        organizations: orgs.map((o) => create(adminv1.OrganizationSchema, { id: o?.id ?? "", name: o?.name ?? "" })),
        roles: entries.map((e) => e.role),
      };
    },

    async addMember(req, hctx) {
      const p = adminOf(hctx);
      const role = parseRole(req.role, "viewer");
      requireGrant(p, role);
      const raw = req.publicKey ? parseKey(req.publicKey) : undefined;
      let passwordHash: string | null = null;
      if (req.password) {
        const problem = checkPasswordPolicy(req.password);
        if (problem) throw new ConnectError(problem, Code.InvalidArgument);
        passwordHash = await hashPassword(req.password);
      }
      const member = await newMember(p.orgId, req.name, role, passwordHash);
      if (raw) await addKey(member, raw, member.name);
      return { member: memberToProto(member, raw ? 1 : 0) };
    },

    async listMembers(_req, hctx) {
      const { orgId } = adminOf(hctx);
      const [members, keys] = await Promise.all([store.access.listMembers(orgId), store.access.listAdminKeys(orgId)]);
      return { members: members.map((m) => memberToProto(m, keys.filter((k) => k.memberId === m.id).length)) };
    },

    async removeMember(req, hctx) {
      const p = adminOf(hctx);
      const member = await findMember(p.orgId, req.member);
      requireGrant(p, member.role);
      await ensureNotLastOwner(p.orgId, member);
      const keys = (await store.access.listAdminKeys(p.orgId)).filter((k) => k.memberId === member.id);
      await store.access.removeMember(p.orgId, member.id, Date.now());
      for (const k of keys) await store.sessions.deleteSessionsOf("admin", k.id);
      await store.sessions.deleteSessionsOf("member", member.id);
      return {};
    },

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

