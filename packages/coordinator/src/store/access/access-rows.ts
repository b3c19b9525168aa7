import type { Selectable } from "kysely";
import { num, numOrNull } from "../columns.ts";
import type { Database } from "../schema/schema.ts";

export type Role = "owner" | "admin" | "deployer" | "viewer";

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
  /** An encoded scrypt hash (access/password.ts), or null for key-only members. */
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

export function toOrg(r: Selectable<Database["orgs"]>): OrgRow {
  return { id: r.id, name: r.name, createdAt: num(r.created_at) };
}

export function toMember(r: Selectable<Database["members"]>): MemberRow {
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

export function memberRecord(m: MemberRow): Database["members"] {
  return { id: m.id, org_id: m.orgId, name: m.name, role: m.role, password_hash: m.passwordHash, created_at: m.createdAt, removed_at: m.removedAt };
}

/** An admin key row joined with its member's role and removal. */
export type KeyWithMember = Selectable<Database["admin_keys"]> & { member_role: string; member_removed_at: number | string | null };

export function toKey(r: KeyWithMember): AdminKeyRow {
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

export function keyRecord(k: Omit<AdminKeyRow, "role">, role: string): Database["admin_keys"] {
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

export function toApiToken(r: Selectable<Database["api_tokens"]>): ApiTokenRow {
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

export function apiTokenRecord(t: ApiTokenRow): Database["api_tokens"] {
  return {
    id: t.id,
    org_id: t.orgId,
    name: t.name,
    role: t.role,
    secret_hash: t.secretHash,
    created_by: t.createdBy,
    created_at: t.createdAt,
    expires_at: t.expiresAt,
    revoked_at: t.revokedAt,
  };
}
