import type { Selectable } from "kysely";
import { num, numOrNull } from "../columns.ts";
import type { Database } from "../schema/schema.ts";

export type Lifecycle = "pending" | "approved" | "rejected" | "decommissioned";

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

/** What one Report call changes of a device's reported state (see DeviceStore.recordReport). */
export interface DeviceReport {
  facts?: { facts: Record<string, unknown>; agentVersion: string; capabilities: string[] };
  observedGeneration?: number;
  /** Stream name to its new acknowledged seq. */
  acked: ReadonlyMap<string, number>;
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

export function toDevice(r: Selectable<Database["devices"]>): DeviceRow {
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

export function toToken(r: Selectable<Database["join_tokens"]>): JoinTokenRow {
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

export function tokenRecord(t: JoinTokenRow): Database["join_tokens"] {
  return {
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
  };
}

export function sortKeys(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
