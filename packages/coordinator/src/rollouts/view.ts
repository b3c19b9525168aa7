/** Rollouts and plans as the admin API shows them. */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { adminv1 } from "@flotilla/protocol";
import type { RolloutCounts, RolloutDeviceRow, RolloutRow, RolloutSpecRow } from "../store/index.ts";
import { tallyCounts } from "./decide.ts";
import type { PlannedRollout } from "./planning.ts";

export function specView(s: RolloutSpecRow): adminv1.RolloutSpec {
  return create(adminv1.RolloutSpecSchema, { ...s, soakMs: BigInt(s.soakMs), deadlineMs: BigInt(s.deadlineMs) });
}

export function planView(p: PlannedRollout): adminv1.Plan {
  const dev = (d: { id: string; name: string; online: boolean }, reason = "") => create(adminv1.PlannedDeviceSchema, { id: d.id, name: d.name, online: d.online, reason });
  return create(adminv1.PlanSchema, {
    releaseName: p.release.name,
    releaseVersion: p.release.version,
    releaseCounter: BigInt(p.release.counter),
    selector: p.spec.selector,
    waves: p.plan.waves.map((w) => ({ number: w.number, entry: w.entry, devices: w.devices.map((d) => dev(d)) })),
    ineligible: p.plan.ineligible.map((i) => dev(i.device, i.reason)),
    offline: p.plan.offline.map((d) => dev(d)),
  });
}

/**
 * A rollout with its per-wave counts (from its wave counters) and, when `devices` is given, every
 * device's state.
 */
export function rolloutView(r: RolloutRow, counts: RolloutCounts, devices?: RolloutDeviceRow[]): adminv1.Rollout {
  const last = r.waves.length;
  return create(adminv1.RolloutSchema, {
    id: r.id,
    spec: specView(r.spec),
    releaseCounter: BigInt(r.releaseCounter),
    status: r.status,
    reason: r.reason,
    currentWave: r.currentWave,
    waiting: r.status === "running" && r.waveFinishedAt !== null && r.currentWave < last,
    createdAt: timestampFromMs(r.createdAt),
    updatedAt: timestampFromMs(r.updatedAt),
    createdBy: r.createdBy,
    waves: r.waves.map((w) => {
      const t = tallyCounts(counts, w.number);
      return { number: w.number, entry: w.entry, total: t.total, healthy: t.healthy, failed: t.failed, skipped: t.skipped, inProgress: t.inProgress, pending: t.pending };
    }),
    devices: devices
      ? devices.map((d) => ({
          deviceId: d.deviceId,
          name: d.name,
          wave: d.wave,
          state: d.state,
          bytesDone: BigInt(d.bytesDone),
          bytesTotal: BigInt(d.bytesTotal),
          error: d.error,
          updatedAt: timestampFromMs(d.updatedAt),
          previousVersion: d.previousVersion,
          previousCounter: BigInt(d.previousCounter),
          rollBackCounter: BigInt(d.rollbackCounter),
        }))
      : [],
  });
}
