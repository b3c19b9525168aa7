import { timestampMs } from "@bufbuild/protobuf/wkt";
import { agentv1, RELEASE_NAME } from "@flotilla/protocol";
import type { ControlReport, DeviceReleaseRow, DeviceRow, Store } from "../store/index.ts";

const CONTROL_STEPS = new Set(["stopped", "started", "restarted", "removed", "control-failed"]);
const STEPS = new Set(["checking", "downloading", "verifying", "activating", "health-checking", "healthy", "failed", "rolled-back", ...CONTROL_STEPS]);

/** Records one ReleaseProgress outbox entry of a device; false when it was invalid and dropped. */
export async function recordReleaseProgress(store: Store, orgId: string, deviceId: string, entry: agentv1.OutboxEntry, p: agentv1.ReleaseProgress): Promise<boolean> {
  // Dropped rather than refused: refusing would block every later entry of the agent's outbox.
  if (!RELEASE_NAME.test(p.name) || p.targetPath.length > 512 || !STEPS.has(p.step) || p.currentVersion.length > 128) return false;
  const ended = p.step === "healthy" || p.step === "failed" || p.step === "rolled-back";
  await store.releases.recordReleaseStep(
    {
      orgId,
      deviceId,
      seq: Number(entry.seq),
      time: entry.time ? timestampMs(entry.time) : Date.now(),
      name: p.name,
      targetPath: p.targetPath,
      step: p.step,
      bytesDone: Number(p.bytesDone),
      bytesTotal: Number(p.bytesTotal),
      error: p.error.slice(0, 4096),
    },
    ended ? { version: p.currentVersion, counter: Number(p.currentCounter) } : undefined,
    CONTROL_STEPS.has(p.step) ? { state: p.step as ControlReport["state"], error: p.error.slice(0, 4096) } : undefined,
  );
  return true;
}

/** The releases a device should run, for its DesiredState. */
export async function desiredReleases(store: Store, device: DeviceRow): Promise<agentv1.DesiredRelease[]> {
  return toDesiredReleases(await store.releases.listDeviceReleases(device.orgId, device.id));
}

/** A device's release rows (ordered by name) as its DesiredState's releases. */
export function toDesiredReleases(rows: readonly DeviceReleaseRow[]): agentv1.DesiredRelease[] {
  return rows.map((r) => ({
    $typeName: "flotilla.agent.v1.DesiredRelease",
    name: r.name,
    targetPath: r.desiredTarget,
    kind: r.desiredKind,
    deployedAt: BigInt(r.desiredAt),
    runState: r.runState,
    restartGeneration: BigInt(r.restartGen),
    purgeData: r.purgeData,
  }));
}
