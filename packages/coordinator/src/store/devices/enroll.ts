import type { Transaction } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import type { Database } from "../schema/schema.ts";
import { toDevice, toToken, type EnrollResult, type NewDevice } from "./device-rows.ts";

/**
 * One enrollment attempt in the caller's transaction: checks the token (locked on PostgreSQL, so
 * concurrent uses of one token count one at a time), counts a use and inserts the device under
 * the first free name. Writes nothing when it refuses.
 */
export async function enrollOnce(trx: Transaction<Database>, adapter: StoreAdapter, tokenId: string, device: NewDevice, now: number): Promise<EnrollResult> {
  let q = trx.selectFrom("join_tokens").selectAll().where("id", "=", tokenId);
  if (adapter.rowLocks) q = q.forUpdate();
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
  await adapter.notifyInTransaction(trx, token.orgId, device.id);
  return { ok: true, device: toDevice(row) };
}

/**
 * `wanted` when the organization does not use it, else `wanted-N` for a free N. Point lookups on
 * the (org_id, name) unique index only: one when the name is free (the usual case, a hostname),
 * else about 2·log2(k) for k names taken after `wanted`, found by galloping over -2, -3, -5,
 * -9, ... to the first free suffix and bisecting back to the lowest free one after the last taken
 * (names are handed out in order, so that is the first gap unless devices brought suffixed
 * hostnames of their own). The old scan of every `wanted-%` name made each enrollment O(N).
 */
async function freeName(trx: Transaction<Database>, orgId: string, wanted: string): Promise<string> {
  const taken = async (name: string) =>
    (await trx.selectFrom("devices").select("id").where("org_id", "=", orgId).where("name", "=", name).executeTakeFirst()) !== undefined;
  if (!(await taken(wanted))) return wanted;
  const nth = (i: number) => `${wanted}-${i}`;
  // Invariant: suffix `lo` is taken (1 stands for `wanted` itself), suffix `hi` is free.
  let lo = 1;
  let step = 1;
  let hi = 2;
  while (await taken(nth(hi))) {
    lo = hi;
    hi = lo + step;
    step *= 2;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await taken(nth(mid))) lo = mid;
    else hi = mid;
  }
  return nth(hi);
}
