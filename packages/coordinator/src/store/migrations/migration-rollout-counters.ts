import type { Kysely, Migration } from "kysely";

/**
 * Migration 0018_rollout_counters: a rollout's wave counters (wave → device state → count, JSON)
 * in its row, kept by every transition in the same transaction that changes a device's state, so
 * a transition reads the rollout row, the one device it is about and these counts instead of
 * every device (see store/rollouts/rollout-store.ts `transition`). Existing rollouts get theirs
 * counted here. The index serves the only device queries left on the hot path: the pending
 * devices of one wave in plan order (which to notify) and the unfinished ones (the deadline).
 */
export const rolloutCountersMigration: Migration = {
  async up(db: Kysely<any>) {
    await db.schema.alterTable("rollouts").addColumn("counts", "text").execute();
    await db.schema.createIndex("rollout_devices_wave_state").on("rollout_devices").columns(["rollout_id", "wave", "state", "position"]).execute();
    const rows = (await db
      .selectFrom("rollout_devices")
      .select(["rollout_id", "wave", "state", (eb) => eb.fn.countAll().as("n")])
      .groupBy(["rollout_id", "wave", "state"])
      .execute()) as { rollout_id: string; wave: number | string; state: string; n: number | string | bigint }[];
    const counts = new Map<string, Record<number, Record<string, number>>>();
    for (const r of rows) {
      const c = counts.get(r.rollout_id) ?? {};
      (c[Number(r.wave)] ??= {})[r.state] = Number(r.n);
      counts.set(r.rollout_id, c);
    }
    for (const [id, c] of counts) await db.updateTable("rollouts").set({ counts: JSON.stringify(c) }).where("id", "=", id).execute();
    await db.updateTable("rollouts").set({ counts: "{}" }).where("counts", "is", null).execute();
  },
};
