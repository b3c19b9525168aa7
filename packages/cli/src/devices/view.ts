/** How devices look in `device ls`, `device show` and JSON. */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { adminv1, commonv1, flattenFacts, nodeId } from "@flotilla/protocol";

/** pending | online | offline | decommissioned | rejected: what `device ls` shows. */
export function deviceStatus(d: adminv1.Device): string {
  switch (d.lifecycle) {
    case commonv1.Lifecycle.PENDING:
      return "pending";
    case commonv1.Lifecycle.REJECTED:
      return "rejected";
    case commonv1.Lifecycle.DECOMMISSIONED:
      return "decommissioned";
    default:
      return d.connection === adminv1.Connection.ONLINE ? "online" : "offline";
  }
}

/** The JSON form of a device, for `--json` and scripts. */
export function deviceJson(d: adminv1.Device) {
  return {
    id: d.id,
    name: d.name,
    status: deviceStatus(d),
    labels: d.labels,
    facts: d.facts ? flattenFacts(d.facts) : {},
    agentVersion: d.agentVersion,
    lastSeen: d.lastSeen ? new Date(timestampMs(d.lastSeen)).toISOString() : null,
    createdAt: d.createdAt ? new Date(timestampMs(d.createdAt)).toISOString() : null,
    publicKey: nodeId(d.publicKey),
    generation: Number(d.generation),
    observedGeneration: Number(d.observedGeneration),
    capabilities: d.capabilities,
  };
}
