/** How access control's rows look on the wire. */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { adminv1, parseNodeId } from "@flotilla/protocol";
import type { AdminKeyRow, ApiTokenRow, AuditEntryRow, MemberRow } from "../store/index.ts";

export function keyToProto(k: AdminKeyRow, member?: MemberRow): adminv1.AdminKey {
  return create(adminv1.AdminKeySchema, {
    id: k.id,
    name: k.name,
    publicKey: parseNodeId(k.publicKey),
    role: k.role,
    createdAt: timestampFromMs(k.createdAt),
    member: member?.name ?? "",
  });
}

export function memberToProto(m: MemberRow, keys: number): adminv1.Member {
  return create(adminv1.MemberSchema, {
    id: m.id,
    name: m.name,
    role: m.role,
    createdAt: timestampFromMs(m.createdAt),
    hasPassword: m.passwordHash !== null,
    keys,
  });
}

export function apiTokenToProto(t: ApiTokenRow): adminv1.ApiToken {
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

export function auditToProto(e: AuditEntryRow): adminv1.AuditEntry {
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
