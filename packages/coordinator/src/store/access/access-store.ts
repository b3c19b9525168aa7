import type { Kysely } from "kysely";
import { claim, lockOrg, type StoreAdapter } from "../adapter.ts";
import { StoreConflictError } from "../errors.ts";
import type { Database } from "../schema/schema.ts";
import { apiTokenRecord, keyRecord, memberRecord, toApiToken, toKey, toMember, toOrg, type AdminKeyRow, type ApiTokenRow, type MemberRow, type OrgRow } from "./access-rows.ts";

export type * from "./access-rows.ts";

/**
 * Who may act in an organization: the organizations themselves, their members, the members'
 * admin keys and the API tokens. Writes that claim a unique thing (an organization's name, a
 * member's name, a key within an organization, an id) throw `StoreConflictError` when another
 * writer got there first.
 */
export interface AccessStore {
  /**
   * Creates the first organization and registers `key` as its owner, if `setupCodeHash`
   * equals the stored setting "setup_code_hash" and setting "setup_code_used" is not set;
   * marks the code used in the same transaction. Returns undefined when the code is wrong or
   * spent.
   */
  bootstrapOwner(input: {
    setupCodeHash: string;
    orgId: string;
    orgName: string;
    member: Omit<MemberRow, "orgId" | "removedAt" | "passwordHash" | "role">;
    key: Omit<AdminKeyRow, "orgId" | "revokedAt" | "memberId" | "role">;
    now: number;
  }): Promise<{ org: OrgRow; key: AdminKeyRow } | undefined>;

  createOrg(org: OrgRow): Promise<void>;
  getOrg(orgId: string): Promise<OrgRow | undefined>;
  getOrgByName(name: string): Promise<OrgRow | undefined>;
  /** Every organization; for the coordinator itself (bootstrap, `up`), never for a caller. */
  listOrgs(): Promise<OrgRow[]>;

  /** Refuses (`StoreConflictError`) a name the organization already uses for a current member. */
  addMember(member: MemberRow): Promise<void>;
  getMember(orgId: string, id: string): Promise<MemberRow | undefined>;
  getMemberByName(orgId: string, name: string): Promise<MemberRow | undefined>;
  /** Current (not removed) members, by name. */
  listMembers(orgId: string): Promise<MemberRow[]>;
  /** Marks the member removed and revokes its keys, in one transaction. */
  removeMember(orgId: string, id: string, now: number): Promise<boolean>;

  /**
   * Registers a key of a current member (throws otherwise). Refuses (`StoreConflictError`) a
   * public key the organization has registered already, unrevoked, for a current member.
   */
  addAdminKey(key: Omit<AdminKeyRow, "role">): Promise<void>;
  /** Unrevoked keys of current members. */
  listAdminKeys(orgId: string): Promise<AdminKeyRow[]>;
  /** The key, revoked or not; `role` is its member's. */
  getAdminKey(orgId: string, id: string): Promise<AdminKeyRow | undefined>;
  revokeAdminKey(orgId: string, id: string, now: number): Promise<boolean>;
  /** Unscoped: every unrevoked registration of this key by a current member, in any organization. */
  findAdminKeysByPublicKey(publicKey: string): Promise<AdminKeyRow[]>;

  createApiToken(token: ApiTokenRow): Promise<void>;
  listApiTokens(orgId: string): Promise<ApiTokenRow[]>;
  /** Unscoped: the token a caller presents. */
  getApiToken(id: string): Promise<ApiTokenRow | undefined>;
  revokeApiToken(orgId: string, id: string, now: number): Promise<boolean>;
}

export class KyselyAccessStore implements AccessStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {}

  async bootstrapOwner(input: Parameters<AccessStore["bootstrapOwner"]>[0]) {
    return this.db.transaction().execute(async (trx) => {
      const settings = await trx.selectFrom("settings").selectAll().where("key", "in", ["setup_code_hash", "setup_code_used"]).execute();
      const get = (k: string) => settings.find((s) => s.key === k)?.value;
      if (get("setup_code_used") || get("setup_code_hash") !== input.setupCodeHash) return undefined;
      // Another replica may race us for the same code: the insert below is the arbiter.
      const used = await trx
        .insertInto("settings")
        .values({ key: "setup_code_used", value: String(input.now) })
        .onConflict((oc) => oc.column("key").doNothing())
        .executeTakeFirst();
      if (Number(used.numInsertedOrUpdatedRows ?? 0n) !== 1) return undefined;
      const org: OrgRow = { id: input.orgId, name: input.orgName, createdAt: input.now };
      await claim(this.adapter, `organization name ${org.name}`, () =>
        trx.insertInto("orgs").values({ id: org.id, name: org.name, created_at: org.createdAt }).execute(),
      );
      const member: MemberRow = { ...input.member, orgId: org.id, role: "owner", passwordHash: null, removedAt: null };
      await trx.insertInto("members").values(memberRecord(member)).execute();
      const key: AdminKeyRow = { ...input.key, orgId: org.id, memberId: input.member.id, role: "owner", revokedAt: null };
      await trx.insertInto("admin_keys").values(keyRecord(key, "owner")).execute();
      return { org, key };
    });
  }

  async createOrg(org: OrgRow): Promise<void> {
    await claim(this.adapter, `organization name ${org.name}`, () =>
      this.db.insertInto("orgs").values({ id: org.id, name: org.name, created_at: org.createdAt }).execute(),
    );
  }

  async getOrg(orgId: string): Promise<OrgRow | undefined> {
    const r = await this.db.selectFrom("orgs").selectAll().where("id", "=", orgId).executeTakeFirst();
    return r && toOrg(r);
  }

  async listOrgs(): Promise<OrgRow[]> {
    const rows = await this.db.selectFrom("orgs").selectAll().orderBy("created_at").orderBy("id").execute();
    return rows.map(toOrg);
  }

  async getOrgByName(name: string): Promise<OrgRow | undefined> {
    const r = await this.db.selectFrom("orgs").selectAll().where("name", "=", name).executeTakeFirst();
    return r && toOrg(r);
  }

  async addMember(m: MemberRow): Promise<void> {
    const what = `a member named ${m.name}`;
    await this.db.transaction().execute(async (trx) => {
      // No unique index holds current members' names (removed members keep theirs), so the
      // organization's row lock makes check-then-insert one claim at a time.
      await lockOrg(trx, this.adapter, m.orgId);
      const clash = await trx
        .selectFrom("members")
        .select("id")
        .where("org_id", "=", m.orgId)
        .where("name", "=", m.name)
        .where("removed_at", "is", null)
        .executeTakeFirst();
      if (clash) throw new StoreConflictError(what);
      await claim(this.adapter, what, () => trx.insertInto("members").values(memberRecord(m)).execute());
    });
  }

  async getMember(orgId: string, id: string): Promise<MemberRow | undefined> {
    const r = await this.db.selectFrom("members").selectAll().where("org_id", "=", orgId).where("id", "=", id).executeTakeFirst();
    return r && toMember(r);
  }

  async getMemberByName(orgId: string, name: string): Promise<MemberRow | undefined> {
    const r = await this.db
      .selectFrom("members")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("name", "=", name)
      .where("removed_at", "is", null)
      .executeTakeFirst();
    return r && toMember(r);
  }

  async listMembers(orgId: string): Promise<MemberRow[]> {
    const rows = await this.db.selectFrom("members").selectAll().where("org_id", "=", orgId).where("removed_at", "is", null).orderBy("name").execute();
    return rows.map(toMember);
  }

  async removeMember(orgId: string, id: string, now: number): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const r = await trx
        .updateTable("members")
        .set({ removed_at: now })
        .where("org_id", "=", orgId)
        .where("id", "=", id)
        .where("removed_at", "is", null)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      await trx.updateTable("admin_keys").set({ revoked_at: now }).where("org_id", "=", orgId).where("member_id", "=", id).where("revoked_at", "is", null).execute();
      return true;
    });
  }

  /** Admin keys joined with their members, through `db` or a transaction. */
  private keys(db: Kysely<Database> = this.db) {
    return db
      .selectFrom("admin_keys")
      .innerJoin("members", "members.id", "admin_keys.member_id")
      .selectAll("admin_keys")
      .select(["members.role as member_role", "members.removed_at as member_removed_at"]);
  }

  /** Unrevoked keys of current members, in registration order. */
  private currentKeys(db: Kysely<Database> = this.db) {
    return this.keys(db).where("admin_keys.revoked_at", "is", null).where("members.removed_at", "is", null).orderBy("admin_keys.created_at").orderBy("admin_keys.id");
  }

  async addAdminKey(key: Omit<AdminKeyRow, "role">): Promise<void> {
    const what = `admin key ${key.publicKey} in this organization`;
    await this.db.transaction().execute(async (trx) => {
      await lockOrg(trx, this.adapter, key.orgId);
      const member = await trx.selectFrom("members").selectAll().where("org_id", "=", key.orgId).where("id", "=", key.memberId).executeTakeFirst();
      if (!member || member.removed_at !== null) throw new Error("no such member");
      const clash = await this.currentKeys(trx).where("admin_keys.org_id", "=", key.orgId).where("admin_keys.public_key", "=", key.publicKey).executeTakeFirst();
      if (clash) throw new StoreConflictError(what);
      await claim(this.adapter, what, () => trx.insertInto("admin_keys").values(keyRecord(key, member.role)).execute());
    });
  }

  async listAdminKeys(orgId: string): Promise<AdminKeyRow[]> {
    return (await this.currentKeys().where("admin_keys.org_id", "=", orgId).execute()).map(toKey);
  }

  async getAdminKey(orgId: string, id: string): Promise<AdminKeyRow | undefined> {
    const r = await this.keys().where("admin_keys.org_id", "=", orgId).where("admin_keys.id", "=", id).executeTakeFirst();
    return r && toKey(r);
  }

  /** Revokes an organization's key or API token; false when it has none by that id not yet revoked. */
  private async revokeOnce(table: "admin_keys" | "api_tokens", orgId: string, id: string, now: number): Promise<boolean> {
    const r = await this.db
      .updateTable(table)
      .set({ revoked_at: now })
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .where("revoked_at", "is", null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async revokeAdminKey(orgId: string, id: string, now: number): Promise<boolean> {
    return this.revokeOnce("admin_keys", orgId, id, now);
  }

  async findAdminKeysByPublicKey(publicKey: string): Promise<AdminKeyRow[]> {
    return (await this.currentKeys().where("admin_keys.public_key", "=", publicKey).execute()).map(toKey);
  }

  async createApiToken(t: ApiTokenRow): Promise<void> {
    await claim(this.adapter, `API token ${t.id}`, () => this.db.insertInto("api_tokens").values(apiTokenRecord(t)).execute());
  }

  async listApiTokens(orgId: string): Promise<ApiTokenRow[]> {
    const rows = await this.db.selectFrom("api_tokens").selectAll().where("org_id", "=", orgId).orderBy("created_at").orderBy("id").execute();
    return rows.map(toApiToken);
  }

  async getApiToken(id: string): Promise<ApiTokenRow | undefined> {
    const r = await this.db.selectFrom("api_tokens").selectAll().where("id", "=", id).executeTakeFirst();
    return r && toApiToken(r);
  }

  async revokeApiToken(orgId: string, id: string, now: number): Promise<boolean> {
    return this.revokeOnce("api_tokens", orgId, id, now);
  }
}
