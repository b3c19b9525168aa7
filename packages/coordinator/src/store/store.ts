/**
 * The coordinator's storage contract. One implementation over Kysely serves SQLite and
 * PostgreSQL; dialect differences live in the adapter, never in callers.
 *
 * Every method that reads or writes an organization's objects takes `orgId` and scopes its
 * query by it, so no call can return another organization's rows. The few unscoped look-ups
 * (by public key, by join token id, by session hash) exist only to establish who a caller is
 * and which organization it belongs to.
 *
 * Times are milliseconds since the epoch. Public keys are raw 32-byte ed25519 keys in base64url
 * (a node id).
 */
import type { TelemetryStore } from "./telemetry-store.ts";

import type { NixStore } from "./nix-store.ts";
import type { ReleaseStore } from "./release-store.ts";
import type { RolloutStore } from "./rollout-store.ts";

export type Role = "owner" | "admin" | "deployer" | "viewer";
export type Lifecycle = "pending" | "approved" | "rejected" | "decommissioned";
/** admin: an admin key; member: a password login; device: an agent. */
export type PrincipalKind = "admin" | "member" | "device";

export interface OrgRow {
  id: string;
  name: string;
  createdAt: number;
}

export interface MemberRow {
  id: string;
  orgId: string;
  /** e.g. alice@acme: unique within the organization. */
  name: string;
  role: Role;
  /** An encoded scrypt hash (auth/password.ts), or null for key-only members. */
  passwordHash: string | null;
  createdAt: number;
  removedAt: number | null;
}

/** An admin key: a credential of one member. Its role is the member's. */
export interface AdminKeyRow {
  id: string;
  orgId: string;
  memberId: string;
  name: string;
  publicKey: string;
  /** The member's role (read through the member). */
  role: Role;
  createdAt: number;
  revokedAt: number | null;
}

export interface ApiTokenRow {
  id: string;
  orgId: string;
  name: string;
  role: Role;
  /** sha256 of the token's secret, hex. */
  secretHash: string;
  createdBy: string;
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
}

export interface AuditEntryRow {
  orgId: string;
  seq: number;
  time: number;
  actor: string;
  action: string;
  target: string;
  source: string;
  outcome: string;
  detail: string;
  prevHash: string;
  hash: string;
}

/** An audit entry before the store places it in the chain. */
export type NewAuditEntry = Omit<AuditEntryRow, "seq" | "prevHash" | "hash">;

export interface SessionRow {
  /** sha256 of the bearer token, hex. The token itself is never stored. */
  tokenHash: string;
  orgId: string;
  principalKind: PrincipalKind;
  principalId: string;
  createdAt: number;
  expiresAt: number;
}

export interface JoinTokenRow {
  id: string;
  orgId: string;
  /** sha256 of the token's secret, hex. */
  secretHash: string;
  labels: Record<string, string>;
  /** 0 means unlimited. */
  usesAllowed: number;
  uses: number;
  expiresAt: number;
  autoApprove: boolean;
  createdAt: number;
  revokedAt: number | null;
}

export interface DeviceRow {
  id: string;
  orgId: string;
  name: string;
  publicKey: string;
  lifecycle: Lifecycle;
  labels: Record<string, string>;
  /** The last reported facts, in the protobuf JSON form of flotilla.common.v1.Facts. */
  facts: Record<string, unknown>;
  agentVersion: string;
  capabilities: string[];
  /** Grows by one with every change of desired state (labels, lifecycle). */
  generation: number;
  observedGeneration: number;
  /** True while a Watch stream is open on some coordinator. */
  connected: boolean;
  lastSeenAt: number | null;
  joinTokenId: string | null;
  createdAt: number;
  updatedAt: number;
}

export interface NewDevice {
  id: string;
  publicKey: string;
  /** The wanted name; the store appends -2, -3, ... when the organization already has it. */
  name: string;
  facts: Record<string, unknown>;
  agentVersion: string;
  capabilities: string[];
}

export type EnrollResult =
  | { ok: true; device: DeviceRow }
  | { ok: false; reason: "unknown-token" | "revoked" | "expired" | "used-up" | "key-enrolled" };

export interface DevicePatch {
  lifecycle?: Lifecycle;
  /** Labels to set (added or overwritten). */
  setLabels?: Record<string, string>;
  /** Label keys to remove. */
  removeLabels?: string[];
}

export interface Store {
  /** Which database this is, for messages and `--print-config`. */
  readonly dialect: "sqlite" | "postgres";
  /** Device logs and metrics (telemetry-store.ts). */
  readonly telemetry: TelemetryStore;

  /** The Nix binary cache's keys and paths. */
  readonly nix: NixStore;
  /** Signed releases and their deployment to devices. */
  readonly releases: ReleaseStore;
  /** Rollouts: waves of devices taking one release, with their per-device state. */
  readonly rollouts: RolloutStore;

  /** Runs pending migrations. Safe to call on every start and from several replicas. */
  migrate(): Promise<void>;
  close(): Promise<void>;

  // Settings: small coordinator-wide values (the setup code hash, for one).
  getSetting(key: string): Promise<string | undefined>;
  setSetting(key: string, value: string): Promise<void>;

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

  /** Refuses (throws) a name the organization already uses for a current member. */
  addMember(member: MemberRow): Promise<void>;
  getMember(orgId: string, id: string): Promise<MemberRow | undefined>;
  getMemberByName(orgId: string, name: string): Promise<MemberRow | undefined>;
  /** Current (not removed) members, by name. */
  listMembers(orgId: string): Promise<MemberRow[]>;
  /** Marks the member removed and revokes its keys, in one transaction. */
  removeMember(orgId: string, id: string, now: number): Promise<boolean>;

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

  /**
   * Appends to the organization's audit chain in one transaction (serialized per organization):
   * `seal` receives the new entry's seq and the previous entry's hash ("" for the first) and
   * returns the new entry's hash.
   */
  appendAudit(
    entry: NewAuditEntry,
    seal: (seq: number, prevHash: string) => string,
  ): Promise<AuditEntryRow>;
  /** The chain's head as the last append left it; undefined before the first entry. */
  getAuditHead(orgId: string): Promise<{ seq: number; hash: string } | undefined>;
  /** Entries in seq order, optionally only from `since` and by `actor`, the newest `limit`. */
  listAudit(orgId: string, filter?: { since?: number; actor?: string; limit?: number }): Promise<AuditEntryRow[]>;

  /** Stores a session; sessions expired at its creation time may be purged. */
  createSession(session: SessionRow): Promise<void>;
  /** The session with this hash, if it has not expired at `now`. */
  getSession(tokenHash: string, now: number): Promise<SessionRow | undefined>;
  deleteSessionsOf(principalKind: PrincipalKind, principalId: string): Promise<void>;

  /**
   * Records a single-use nonce. Returns false when it was recorded before (a replay).
   * Nonces past `expiresAt` may be purged.
   */
  useNonce(nonce: string, expiresAt: number, now: number): Promise<boolean>;

  createJoinToken(token: JoinTokenRow): Promise<void>;
  listJoinTokens(orgId: string): Promise<JoinTokenRow[]>;
  /** Returns false when the organization has no such token. */
  revokeJoinToken(orgId: string, id: string, now: number): Promise<boolean>;
  /** Unscoped: the token an enrolling agent presents. */
  getJoinToken(id: string): Promise<JoinTokenRow | undefined>;

  /**
   * In one transaction: checks the token (exists, not revoked, not expired at `now`, not used
   * up), counts one use, and creates the device in the token's organization with the token's
   * labels, pending or approved as the token says. Nothing is written when it refuses.
   */
  enrollDevice(tokenId: string, device: NewDevice, now: number): Promise<EnrollResult>;

  getDevice(orgId: string, id: string): Promise<DeviceRow | undefined>;
  getDeviceByName(orgId: string, name: string): Promise<DeviceRow | undefined>;
  /** Unscoped: the device an authenticating agent claims to be. */
  findDeviceByPublicKey(publicKey: string): Promise<DeviceRow | undefined>;
  /** Every device of the organization, ordered by name. */
  listDevices(orgId: string): Promise<DeviceRow[]>;
  /**
   * Applies a change of desired state and bumps `generation` by one, in one transaction.
   * Returns undefined when the organization has no such device.
   */
  updateDevice(orgId: string, id: string, patch: DevicePatch, now: number): Promise<DeviceRow | undefined>;
  /** Reported state; does not bump `generation`. */
  recordFacts(
    orgId: string,
    id: string,
    report: { facts: Record<string, unknown>; agentVersion: string; capabilities: string[] },
    now: number,
  ): Promise<void>;
  setObservedGeneration(orgId: string, id: string, generation: number): Promise<void>;
  setConnection(orgId: string, id: string, connected: boolean, lastSeenAt: number): Promise<void>;

  /** The highest contiguous seq stored for (device, stream); 0 when none. */
  getAckedSeq(deviceId: string, stream: string): Promise<number>;
  setAckedSeq(deviceId: string, stream: string, seq: number): Promise<void>;

  /**
   * Calls `listener` after any committed change of a device's desired state (updateDevice,
   * enrollDevice), on this coordinator and, on PostgreSQL, on every replica sharing the
   * database (LISTEN/NOTIFY). Returns a function that removes the listener.
   */
  onDeviceChange(listener: (orgId: string, deviceId: string) => void): () => void;
}

export type { DeviceReleaseRow, ReleaseRow, ReleaseStepRow, ReleaseStore } from "./release-store.ts";
export type * from "./rollout-store.ts";
