import { create, fromJson, toJson, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { adminv1, commonv1, flattenFacts, parseNodeId } from "@flotilla/protocol";
import type { DeviceRow, Lifecycle } from "../store/index.ts";

const lifecycles: Record<Lifecycle, commonv1.Lifecycle> = {
  pending: commonv1.Lifecycle.PENDING,
  approved: commonv1.Lifecycle.APPROVED,
  rejected: commonv1.Lifecycle.REJECTED,
  decommissioned: commonv1.Lifecycle.DECOMMISSIONED,
};

export function lifecycleToProto(l: Lifecycle): commonv1.Lifecycle {
  return lifecycles[l];
}

export function factsToJson(facts: commonv1.Facts): Record<string, unknown> {
  return toJson(commonv1.FactsSchema, facts) as Record<string, unknown>;
}

export function factsFromJson(json: Record<string, unknown>): commonv1.Facts {
  return fromJson(commonv1.FactsSchema, json as JsonObject, { ignoreUnknownFields: true });
}

/**
 * What a selector matches a device against: its flattened facts (arch, os, disk.0.mount, ...)
 * with its labels on top, so a label may stand in for a fact of the same name.
 */
export function selectorFields(row: DeviceRow): Record<string, string> {
  return { ...flattenFacts(factsFromJson(row.facts)), ...row.labels };
}

/** Whether the device counts as online: a Watch stream is open and it was seen recently. */
export function isOnline(row: DeviceRow, now: number, offlineAfterMs: number): boolean {
  return row.connected && row.lastSeenAt !== null && now - row.lastSeenAt <= offlineAfterMs;
}

export function deviceToProto(row: DeviceRow, now: number, offlineAfterMs: number): adminv1.Device {
  return create(adminv1.DeviceSchema, {
    id: row.id,
    name: row.name,
    lifecycle: lifecycleToProto(row.lifecycle),
    connection: isOnline(row, now, offlineAfterMs)
      ? adminv1.Connection.ONLINE
      : adminv1.Connection.OFFLINE,
    labels: row.labels,
    facts: factsFromJson(row.facts),
    agentVersion: row.agentVersion,
    lastSeen: row.lastSeenAt === null ? undefined : timestampFromMs(row.lastSeenAt),
    createdAt: timestampFromMs(row.createdAt),
    publicKey: parseNodeId(row.publicKey),
    generation: BigInt(row.generation),
    observedGeneration: BigInt(row.observedGeneration),
    capabilities: row.capabilities,
  });
}
