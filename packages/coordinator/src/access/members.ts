/**
 * Members, their admin keys, and organizations. Which role may call what is decided by
 * policy.ts alone; these handlers check only what depends on the data (no one grants a role
 * above their own, the last owner stays).
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { adminv1, fingerprint, newId, nodeId, parseAnyPublicKey, parseNodeId } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { AdminKeyRow, MemberRow, OrgRow, Role } from "../store/index.ts";
import { checkPasswordPolicy, hashPassword } from "./password.ts";
import { adminOf, remoteAddressKey } from "./principal.ts";
import { callerKey, MEMBER_NAME, parseRole, requireGrant } from "./rules.ts";
import { keyToProto, memberToProto } from "./views.ts";

const ORG_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

function parseKey(text: string): Uint8Array {
  try {
    return parseAnyPublicKey(text.slice(0, 4096));
  } catch (err) {
    throw new ConnectError((err as Error).message, Code.InvalidArgument);
  }
}

type MemberMethods = Pick<
  ServiceImpl<typeof adminv1.AdminService>,
  "addAdminKey" | "listAdminKeys" | "revokeAdminKey" | "createOrganization" | "listOrganizations" | "addMember" | "listMembers" | "removeMember"
>;

/** AdminService: members and their keys, and the organizations a key belongs to. */
export function memberMethods(ctx: ServiceContext): MemberMethods {
  const { store, log, auditor } = ctx;

  async function findMember(orgId: string, ref: string): Promise<MemberRow> {
    const m = (await store.access.getMember(orgId, ref)) ?? (await store.access.getMemberByName(orgId, ref));
    if (!m || m.removedAt !== null) throw new ConnectError(`no member ${JSON.stringify(ref)}`, Code.NotFound);
    return m;
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
      const key = await callerKey(store, p);
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
      const key = await callerKey(store, p);
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
  };
}

