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
