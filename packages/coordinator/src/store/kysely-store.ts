import { Migrator, type Kysely, type Selectable, type Transaction } from "kysely";
import type { StoreAdapter } from "./adapter.ts";
import { migrationProvider } from "./migrations.ts";
import { KyselyNixStore, type NixStore } from "./nix-store.ts";
import { KyselyReleaseStore, type ReleaseStore } from "./release-store.ts";
import { KyselyRolloutStore, type RolloutStore } from "./rollout-store.ts";
import type { Database } from "./schema.ts";
import { KyselyTelemetryStore, type TelemetryStore } from "./telemetry-store.ts";
import type {
  AdminKeyRow,
  ApiTokenRow,
  AuditEntryRow,
  MemberRow,
  NewAuditEntry,
  DevicePatch,
  DeviceRow,
  EnrollResult,
  JoinTokenRow,
  Lifecycle,
  NewDevice,
  OrgRow,
  PrincipalKind,
  Role,
  SessionRow,
  Store,
} from "./store.ts";

type DeviceRecord = Selectable<Database["devices"]>;

// Some drivers hand bigint columns back as strings; every number read goes through this.
const num = (v: number | string): number => Number(v);
const numOrNull = (v: number | string | null): number | null => (v === null ? null : Number(v));

function toDevice(r: DeviceRecord): DeviceRow {
  return {
    id: r.id,
    orgId: r.org_id,
    name: r.name,
    publicKey: r.public_key,
    lifecycle: r.lifecycle as Lifecycle,
    labels: JSON.parse(r.labels) as Record<string, string>,
    facts: JSON.parse(r.facts) as Record<string, unknown>,
    agentVersion: r.agent_version,
    capabilities: JSON.parse(r.capabilities) as string[],
    generation: num(r.generation),
    observedGeneration: num(r.observed_generation),
    connected: num(r.connected) === 1,
    lastSeenAt: numOrNull(r.last_seen_at),
    joinTokenId: r.join_token_id,
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
  };
}

function toToken(r: Selectable<Database["join_tokens"]>): JoinTokenRow {
  return {
    id: r.id,
    orgId: r.org_id,
    secretHash: r.secret_hash,
    labels: JSON.parse(r.labels) as Record<string, string>,
    usesAllowed: num(r.uses_allowed),
    uses: num(r.uses),
    expiresAt: num(r.expires_at),
    autoApprove: num(r.auto_approve) === 1,
    createdAt: num(r.created_at),
    revokedAt: numOrNull(r.revoked_at),
  };
}

type KeyWithMember = Selectable<Database["admin_keys"]> & { member_role: string; member_removed_at: number | string | null };

function toKey(r: KeyWithMember): AdminKeyRow {
  return {
    id: r.id,
    orgId: r.org_id,
    memberId: r.member_id ?? "",
    name: r.name,
    publicKey: r.public_key,
    role: r.member_role as Role,
    createdAt: num(r.created_at),
    // A removed member's keys count as revoked from the moment of removal.
    revokedAt: numOrNull(r.revoked_at) ?? numOrNull(r.member_removed_at),
  };
}

function keyRecord(k: Omit<AdminKeyRow, "role">, role: string): Database["admin_keys"] {
  return {
    id: k.id,
    org_id: k.orgId,
    member_id: k.memberId,
    name: k.name,
    public_key: k.publicKey,
    role,
    created_at: k.createdAt,
    revoked_at: k.revokedAt,
  };
}

function toMember(r: Selectable<Database["members"]>): MemberRow {
  return {
    id: r.id,
    orgId: r.org_id,
    name: r.name,
    role: r.role as Role,
    passwordHash: r.password_hash,
    createdAt: num(r.created_at),
    removedAt: numOrNull(r.removed_at),
  };
}

function toApiToken(r: Selectable<Database["api_tokens"]>): ApiTokenRow {
  return {
    id: r.id,
    orgId: r.org_id,
    name: r.name,
    role: r.role as Role,
    secretHash: r.secret_hash,
    createdBy: r.created_by,
    createdAt: num(r.created_at),
    expiresAt: num(r.expires_at),
    revokedAt: numOrNull(r.revoked_at),
  };
}

function toAudit(r: Selectable<Database["audit_log"]>): AuditEntryRow {
  return {
    orgId: r.org_id,
    seq: num(r.seq),
    time: num(r.time),
    actor: r.actor,
    action: r.action,
    target: r.target,
    source: r.source,
    outcome: r.outcome,
    detail: r.detail,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/** The store over Kysely: one implementation, SQLite or PostgreSQL underneath. */
export class KyselyStore implements Store {
  readonly telemetry: TelemetryStore;
  readonly releases: ReleaseStore;
  readonly rollouts: RolloutStore;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly adapter: StoreAdapter,
  ) {
    this.nix = new KyselyNixStore(db, adapter);
    this.telemetry = new KyselyTelemetryStore(db, adapter);
    this.releases = new KyselyReleaseStore(db, adapter);
    this.rollouts = new KyselyRolloutStore(db, adapter);
  }

  readonly nix: NixStore;

  get dialect(): "sqlite" | "postgres" {
    return this.adapter.dialect;
  }

  async migrate(): Promise<void> {
    const { error, results } = await new Migrator({ db: this.db, provider: migrationProvider }).migrateToLatest();
    if (error) {
      const failed = results?.find((r) => r.status === "Error")?.migrationName;
      throw new Error(`database migration ${failed ?? ""} failed: ${String(error)}`);
    }
  }

  async close(): Promise<void> {
    await this.adapter.close(this.db);
    await this.db.destroy();
  }

  async getSetting(key: string): Promise<string | undefined> {
    return (await this.db.selectFrom("settings").select("value").where("key", "=", key).executeTakeFirst())?.value;
  }

  async setSetting(key: string, value: string): Promise<void> {
    await this.db
      .insertInto("settings")
      .values({ key, value })
      .onConflict((oc) => oc.column("key").doUpdateSet({ value }))
      .execute();
  }

  async bootstrapOwner(input: Parameters<Store["bootstrapOwner"]>[0]) {
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
      await trx.insertInto("orgs").values({ id: org.id, name: org.name, created_at: org.createdAt }).execute();
      await trx
        .insertInto("members")
        .values({ id: input.member.id, org_id: org.id, name: input.member.name, role: "owner", password_hash: null, created_at: input.member.createdAt, removed_at: null })
        .execute();
      const key: AdminKeyRow = { ...input.key, orgId: org.id, memberId: input.member.id, role: "owner", revokedAt: null };
      await trx.insertInto("admin_keys").values(keyRecord(key, "owner")).execute();
      return { org, key };
    });
  }

  async createOrg(org: OrgRow): Promise<void> {
    await this.db.insertInto("orgs").values({ id: org.id, name: org.name, created_at: org.createdAt }).execute();
  }

  async getOrg(orgId: string): Promise<OrgRow | undefined> {
    const r = await this.db.selectFrom("orgs").selectAll().where("id", "=", orgId).executeTakeFirst();
    return r && { id: r.id, name: r.name, createdAt: num(r.created_at) };
  }

  async listOrgs(): Promise<OrgRow[]> {
    const rows = await this.db.selectFrom("orgs").selectAll().orderBy("created_at").orderBy("id").execute();
    return rows.map((r) => ({ id: r.id, name: r.name, createdAt: num(r.created_at) }));
  }

  async getOrgByName(name: string): Promise<OrgRow | undefined> {
    const r = await this.db.selectFrom("orgs").selectAll().where("name", "=", name).executeTakeFirst();
    return r && { id: r.id, name: r.name, createdAt: num(r.created_at) };
  }

  async addMember(m: MemberRow): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const clash = await trx
        .selectFrom("members")
        .select("id")
        .where("org_id", "=", m.orgId)
        .where("name", "=", m.name)
        .where("removed_at", "is", null)
        .executeTakeFirst();
      if (clash) throw new Error(`a member named ${m.name} already exists`);
      await trx
        .insertInto("members")
        .values({ id: m.id, org_id: m.orgId, name: m.name, role: m.role, password_hash: m.passwordHash, created_at: m.createdAt, removed_at: m.removedAt })
        .execute();
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

  private keys() {
    return this.db
      .selectFrom("admin_keys")
      .innerJoin("members", "members.id", "admin_keys.member_id")
      .selectAll("admin_keys")
      .select(["members.role as member_role", "members.removed_at as member_removed_at"]);
  }

  async addAdminKey(key: Omit<AdminKeyRow, "role">): Promise<void> {
    const member = await this.getMember(key.orgId, key.memberId);
    if (!member || member.removedAt !== null) throw new Error("no such member");
    await this.db.insertInto("admin_keys").values(keyRecord(key, member.role)).execute();
  }

  async listAdminKeys(orgId: string): Promise<AdminKeyRow[]> {
    const rows = await this.keys()
      .where("admin_keys.org_id", "=", orgId)
      .where("admin_keys.revoked_at", "is", null)
      .where("members.removed_at", "is", null)
      .orderBy("admin_keys.created_at")
      .orderBy("admin_keys.id")
      .execute();
    return rows.map(toKey);
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
    const rows = await this.keys()
      .where("admin_keys.public_key", "=", publicKey)
      .where("admin_keys.revoked_at", "is", null)
      .where("members.removed_at", "is", null)
      .orderBy("admin_keys.created_at")
      .orderBy("admin_keys.id")
      .execute();
    return rows.map(toKey);
  }

  async createApiToken(t: ApiTokenRow): Promise<void> {
    await this.db
      .insertInto("api_tokens")
      .values({
        id: t.id,
        org_id: t.orgId,
        name: t.name,
        role: t.role,
        secret_hash: t.secretHash,
        created_by: t.createdBy,
        created_at: t.createdAt,
        expires_at: t.expiresAt,
        revoked_at: t.revokedAt,
      })
      .execute();
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

  async appendAudit(entry: NewAuditEntry, seal: (seq: number, prevHash: string) => string): Promise<AuditEntryRow> {
    return this.db.transaction().execute(async (trx) => {
      // The head row serializes appends per organization (a row lock on PostgreSQL; SQLite has
      // one writer at a time).
      await trx
        .insertInto("audit_heads")
        .values({ org_id: entry.orgId, seq: 0, hash: "" })
        .onConflict((oc) => oc.column("org_id").doNothing())
        .execute();
      let q = trx.selectFrom("audit_heads").selectAll().where("org_id", "=", entry.orgId);
      if (this.adapter.rowLocks) q = q.forUpdate();
      const head = await q.executeTakeFirstOrThrow();
      const seq = num(head.seq) + 1;
      const row: AuditEntryRow = { ...entry, seq, prevHash: head.hash, hash: seal(seq, head.hash) };
      await trx
        .insertInto("audit_log")
        .values({
          org_id: row.orgId,
          seq: row.seq,
          time: row.time,
          actor: row.actor,
          action: row.action,
          target: row.target,
          source: row.source,
          outcome: row.outcome,
          detail: row.detail,
          prev_hash: row.prevHash,
          hash: row.hash,
        })
        .execute();
      await trx.updateTable("audit_heads").set({ seq, hash: row.hash }).where("org_id", "=", entry.orgId).execute();
      return row;
    });
  }

  async getAuditHead(orgId: string): Promise<{ seq: number; hash: string } | undefined> {
    const r = await this.db.selectFrom("audit_heads").selectAll().where("org_id", "=", orgId).executeTakeFirst();
    return r && { seq: num(r.seq), hash: r.hash };
  }

  async listAudit(orgId: string, filter: { since?: number; actor?: string; limit?: number } = {}): Promise<AuditEntryRow[]> {
    let q = this.db.selectFrom("audit_log").selectAll().where("org_id", "=", orgId);
    if (filter.since !== undefined) q = q.where("time", ">=", filter.since);
    if (filter.actor) q = q.where("actor", "=", filter.actor);
    const rows = await q.orderBy("seq", "desc").limit(filter.limit ?? 1_000_000).execute();
    return rows.map(toAudit).reverse();
  }

  async createSession(s: SessionRow): Promise<void> {
    // Expired sessions are useless; sweeping them here keeps the table small without a timer.
    await this.db.deleteFrom("sessions").where("expires_at", "<=", s.createdAt).execute();
    await this.db
      .insertInto("sessions")
      .values({
        token_hash: s.tokenHash,
        org_id: s.orgId,
        principal_kind: s.principalKind,
        principal_id: s.principalId,
        created_at: s.createdAt,
        expires_at: s.expiresAt,
      })
      .execute();
  }

  async getSession(tokenHash: string, now: number): Promise<SessionRow | undefined> {
    const r = await this.db
      .selectFrom("sessions")
      .selectAll()
      .where("token_hash", "=", tokenHash)
      .where("expires_at", ">", now)
      .executeTakeFirst();
    return (
      r && {
        tokenHash: r.token_hash,
        orgId: r.org_id,
        principalKind: r.principal_kind as PrincipalKind,
        principalId: r.principal_id,
        createdAt: num(r.created_at),
        expiresAt: num(r.expires_at),
      }
    );
  }

  async deleteSessionsOf(kind: PrincipalKind, principalId: string): Promise<void> {
    await this.db.deleteFrom("sessions").where("principal_kind", "=", kind).where("principal_id", "=", principalId).execute();
  }

  async useNonce(nonce: string, expiresAt: number, now: number): Promise<boolean> {
    await this.db.deleteFrom("nonces").where("expires_at", "<", now).execute();
    const r = await this.db
      .insertInto("nonces")
      .values({ nonce, expires_at: expiresAt })
      .onConflict((oc) => oc.column("nonce").doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async createJoinToken(t: JoinTokenRow): Promise<void> {
    await this.db
      .insertInto("join_tokens")
      .values({
        id: t.id,
        org_id: t.orgId,
        secret_hash: t.secretHash,
        labels: JSON.stringify(t.labels),
        uses_allowed: t.usesAllowed,
        uses: t.uses,
        expires_at: t.expiresAt,
        auto_approve: t.autoApprove ? 1 : 0,
        created_at: t.createdAt,
        revoked_at: t.revokedAt,
      })
      .execute();
  }

  async listJoinTokens(orgId: string): Promise<JoinTokenRow[]> {
    const rows = await this.db.selectFrom("join_tokens").selectAll().where("org_id", "=", orgId).orderBy("created_at").orderBy("id").execute();
    return rows.map(toToken);
  }

  async revokeJoinToken(orgId: string, id: string, now: number): Promise<boolean> {
    const r = await this.db
      .updateTable("join_tokens")
      .set({ revoked_at: now })
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async getJoinToken(id: string): Promise<JoinTokenRow | undefined> {
    const r = await this.db.selectFrom("join_tokens").selectAll().where("id", "=", id).executeTakeFirst();
    return r && toToken(r);
  }

  async enrollDevice(tokenId: string, device: NewDevice, now: number): Promise<EnrollResult> {
    const result = await this.db.transaction().execute(async (trx): Promise<EnrollResult> => {
      let q = trx.selectFrom("join_tokens").selectAll().where("id", "=", tokenId);
      if (this.adapter.rowLocks) q = q.forUpdate();
      const r = await q.executeTakeFirst();
      if (!r) return { ok: false, reason: "unknown-token" };
      const token = toToken(r);
      if (token.revokedAt !== null) return { ok: false, reason: "revoked" };
      if (token.expiresAt <= now) return { ok: false, reason: "expired" };
      if (token.usesAllowed > 0 && token.uses >= token.usesAllowed) return { ok: false, reason: "used-up" };
      const existing = await trx.selectFrom("devices").select("id").where("public_key", "=", device.publicKey).executeTakeFirst();
      if (existing) return { ok: false, reason: "key-enrolled" };

      const name = await freeName(trx, token.orgId, device.name);
      await trx.updateTable("join_tokens").set({ uses: token.uses + 1 }).where("id", "=", token.id).execute();
      const row: Database["devices"] = {
        id: device.id,
        org_id: token.orgId,
        name,
        public_key: device.publicKey,
        lifecycle: token.autoApprove ? "approved" : "pending",
        labels: JSON.stringify(token.labels),
        facts: JSON.stringify(device.facts),
        agent_version: device.agentVersion,
        capabilities: JSON.stringify(device.capabilities),
        generation: 1,
        observed_generation: 0,
        connected: 0,
        last_seen_at: now,
        join_token_id: token.id,
        created_at: now,
        updated_at: now,
      };
      await trx.insertInto("devices").values(row).execute();
      await this.adapter.notifyInTransaction(trx, token.orgId, device.id);
      return { ok: true, device: toDevice(row) };
    });
    if (result.ok) this.adapter.notifyAfterCommit(result.device.orgId, result.device.id);
    return result;
  }

  async getDevice(orgId: string, id: string): Promise<DeviceRow | undefined> {
    const r = await this.db.selectFrom("devices").selectAll().where("org_id", "=", orgId).where("id", "=", id).executeTakeFirst();
    return r && toDevice(r);
  }

  async getDeviceByName(orgId: string, name: string): Promise<DeviceRow | undefined> {
    const r = await this.db.selectFrom("devices").selectAll().where("org_id", "=", orgId).where("name", "=", name).executeTakeFirst();
    return r && toDevice(r);
  }

  async findDeviceByPublicKey(publicKey: string): Promise<DeviceRow | undefined> {
    const r = await this.db.selectFrom("devices").selectAll().where("public_key", "=", publicKey).executeTakeFirst();
    return r && toDevice(r);
  }

  async listDevices(orgId: string): Promise<DeviceRow[]> {
    const rows = await this.db.selectFrom("devices").selectAll().where("org_id", "=", orgId).orderBy("name").execute();
    return rows.map(toDevice);
  }

  async updateDevice(orgId: string, id: string, patch: DevicePatch, now: number): Promise<DeviceRow | undefined> {
    const updated = await this.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom("devices").selectAll().where("org_id", "=", orgId).where("id", "=", id);
      if (this.adapter.rowLocks) q = q.forUpdate();
      const r = await q.executeTakeFirst();
      if (!r) return undefined;
      const labels = JSON.parse(r.labels) as Record<string, string>;
      Object.assign(labels, patch.setLabels ?? {});
      for (const k of patch.removeLabels ?? []) delete labels[k];
      const set = {
        lifecycle: patch.lifecycle ?? r.lifecycle,
        labels: JSON.stringify(sortKeys(labels)),
        generation: num(r.generation) + 1,
        updated_at: now,
      };
      await trx.updateTable("devices").set(set).where("id", "=", id).execute();
      await this.adapter.notifyInTransaction(trx, orgId, id);
      return toDevice({ ...r, ...set });
    });
    if (updated) this.adapter.notifyAfterCommit(orgId, id);
    return updated;
  }

  async recordFacts(
    orgId: string,
    id: string,
    report: { facts: Record<string, unknown>; agentVersion: string; capabilities: string[] },
    now: number,
  ): Promise<void> {
    await this.db
      .updateTable("devices")
      .set({
        facts: JSON.stringify(report.facts),
        agent_version: report.agentVersion,
        capabilities: JSON.stringify(report.capabilities),
        updated_at: now,
      })
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .execute();
  }

  async setObservedGeneration(orgId: string, id: string, generation: number): Promise<void> {
    await this.db.updateTable("devices").set({ observed_generation: generation }).where("org_id", "=", orgId).where("id", "=", id).execute();
  }

  async setConnection(orgId: string, id: string, connected: boolean, lastSeenAt: number): Promise<void> {
    await this.db
      .updateTable("devices")
      .set({ connected: connected ? 1 : 0, last_seen_at: lastSeenAt })
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .execute();
  }

  async getAckedSeq(deviceId: string, stream: string): Promise<number> {
    const r = await this.db
      .selectFrom("device_streams")
      .select("acked_seq")
      .where("device_id", "=", deviceId)
      .where("stream", "=", stream)
      .executeTakeFirst();
    return r ? num(r.acked_seq) : 0;
  }

  async setAckedSeq(deviceId: string, stream: string, seq: number): Promise<void> {
    await this.db
      .insertInto("device_streams")
      .values({ device_id: deviceId, stream, acked_seq: seq })
      .onConflict((oc) => oc.columns(["device_id", "stream"]).doUpdateSet({ acked_seq: seq }))
      .execute();
  }

  onDeviceChange(listener: (orgId: string, deviceId: string) => void): () => void {
    return this.adapter.listen(listener);
  }
}

function sortKeys(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** `wanted`, or `wanted-2`, `wanted-3`, ...: the first name the organization does not use. */
async function freeName(trx: Transaction<Database>, orgId: string, wanted: string): Promise<string> {
  const taken = new Set(
    (
      await trx
        .selectFrom("devices")
        .select("name")
        .where("org_id", "=", orgId)
        .where((eb) => eb.or([eb("name", "=", wanted), eb("name", "like", `${wanted}-%`)]))
        .execute()
    ).map((r) => r.name),
  );
  if (!taken.has(wanted)) return wanted;
  for (let i = 2; ; i++) if (!taken.has(`${wanted}-${i}`)) return `${wanted}-${i}`;
}
