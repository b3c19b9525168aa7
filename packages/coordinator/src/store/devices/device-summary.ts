import type { Kysely } from "kysely";
import { num } from "../columns.ts";
import type { Database } from "../schema/schema.ts";

/** The overview's counts of an organization's devices. */
export interface DeviceSummary {
  online: number;
  offline: number;
  pending: number;
  failing: number;
}

/** Device ids per `in (...)` of the latest-rollout check. */
const CHUNK = 500;

/**
 * Counts without reading every device: one grouped count of the devices table, then the failed
 * and rolled-back rollout devices (index rollout_devices_org_state: usually few) and, for those
 * devices only, every rollout they were in (index rollout_devices_device), to keep the ones whose
 * latest rollout is the failing one. Online: approved, an open Watch stream, seen since `onlineSince`.
 */
export async function summarizeDevices(db: Kysely<Database>, orgId: string, onlineSince: number): Promise<DeviceSummary> {
  const groups = await db
    .selectFrom("devices")
    .select((eb) => [
      "lifecycle",
      eb.fn.countAll().as("n"),
      eb.fn.sum(eb.case().when(eb.and([eb("connected", "=", 1), eb("last_seen_at", ">=", onlineSince)])).then(1).else(0).end()).as("online"),
    ])
    .where("org_id", "=", orgId)
    .groupBy("lifecycle")
    .execute();
  let approved = 0;
  let online = 0;
  let pending = 0;
  for (const g of groups) {
    if (g.lifecycle === "approved") {
      approved = num(g.n as number);
      online = num((g.online ?? 0) as number);
    } else if (g.lifecycle === "pending") pending = num(g.n as number);
  }

  const failed = await db
    .selectFrom("rollout_devices as rd")
    .innerJoin("devices as d", "d.id", "rd.device_id")
    .select("rd.device_id")
    .distinct()
    .where("rd.org_id", "=", orgId)
    .where("d.lifecycle", "=", "approved")
    .where("rd.state", "in", ["failed", "rolled-back"])
    .execute();
  let failing = 0;
  const ids = failed.map((r) => r.device_id);
  for (let i = 0; i < ids.length; i += CHUNK) {
    const rows = await db
      .selectFrom("rollout_devices as rd")
      .innerJoin("rollouts as r", "r.id", "rd.rollout_id")
      .select(["rd.device_id", "rd.state", "r.created_at", "r.id"])
      .where("rd.org_id", "=", orgId)
      .where("rd.device_id", "in", ids.slice(i, i + CHUNK))
      .execute();
    const latest = new Map<string, { at: number; id: string; state: string }>();
    for (const r of rows) {
      const at = num(r.created_at);
      const cur = latest.get(r.device_id);
      if (!cur || at > cur.at || (at === cur.at && r.id > cur.id)) latest.set(r.device_id, { at, id: r.id, state: r.state });
    }
    for (const l of latest.values()) if (l.state === "failed" || l.state === "rolled-back") failing++;
  }
  return { online, offline: approved - online, pending, failing };
}
