/**
 * The rollout state machine as pure functions: given a rollout and its devices as one
 * transaction read them, what changes. The store applies the result in that same transaction
 * (store/rollout-store.ts `transition`), so a crash between transitions repeats nothing.
 */
import type { RolloutChanges, RolloutDeviceState, RolloutDeviceView, RolloutRow } from "../store/index.ts";

const TERMINAL: ReadonlySet<RolloutDeviceState> = new Set(["healthy", "failed", "rolled-back", "skipped"]);
const IN_FLIGHT: ReadonlySet<RolloutDeviceState> = new Set(["notified", "downloading", "verifying", "activating", "health-checking"]);

/** Whether a device has finished with this rollout, one way or another. */
export const isTerminal = (s: RolloutDeviceState): boolean => TERMINAL.has(s);
/** Whether a device state counts against the failure threshold. */
export const isFailure = (s: RolloutDeviceState): boolean => s === "failed" || s === "rolled-back";

/** Agent release steps (agent.proto ReleaseProgress.step) as rollout device states. */
const STEP_STATE: Record<string, RolloutDeviceState> = {
  checking: "notified",
  downloading: "downloading",
  verifying: "verifying",
  activating: "activating",
  "health-checking": "health-checking",
  healthy: "healthy",
  failed: "failed",
  "rolled-back": "rolled-back",
};

/** One release step an agent reported. */
export interface ReleaseStepEvent {
  name: string;
  targetPath: string;
  step: string;
  bytesDone: number;
  bytesTotal: number;
  error: string;
}

/** Collects changes against a working copy, so later rules see earlier decisions. */
class Draft {
  readonly changes: RolloutChanges = {};
  readonly rollout: RolloutRow;
  readonly devices: RolloutDeviceView[];

  constructor(rollout: RolloutRow, devices: RolloutDeviceView[]) {
    this.rollout = { ...rollout };
    this.devices = devices.map((d) => ({ ...d }));
  }

  setRollout(patch: NonNullable<RolloutChanges["rollout"]>): void {
    Object.assign(this.rollout, patch);
    this.changes.rollout = { ...this.changes.rollout, ...patch };
  }

  setDevice(d: RolloutDeviceView, state: RolloutDeviceState, extra: { error?: string; bytesDone?: number; bytesTotal?: number } = {}): void {
    d.state = state;
    Object.assign(d, extra);
    (this.changes.devices ??= []).push({ deviceId: d.deviceId, state, ...extra });
  }

  notify(d: RolloutDeviceView): void {
    d.state = "notified";
    (this.changes.notify ??= []).push(d.deviceId);
  }

  result(): RolloutChanges | undefined {
    const c = this.changes;
    return c.rollout || c.devices?.length || c.notify?.length || c.rollBack?.length ? c : undefined;
  }
}

/** Counts per state, for reasons and summaries. */
export function tally(devices: readonly { state: RolloutDeviceState }[]) {
  let healthy = 0, failed = 0, skipped = 0, inProgress = 0, pending = 0;
  for (const d of devices) {
    if (d.state === "healthy") healthy++;
    else if (isFailure(d.state)) failed++;
    else if (d.state === "skipped") skipped++;
    else if (d.state === "pending") pending++;
    else inProgress++;
  }
  return { healthy, failed, skipped, inProgress, pending, total: devices.length };
}

/** Whether the device's Watch stream is open and it was seen recently. */
export function isOnline(d: RolloutDeviceView, now: number, offlineAfterMs: number): boolean {
  return d.connected && d.lastSeenAt !== null && now - d.lastSeenAt <= offlineAfterMs;
}

/**
 * Moves a running rollout forward: skips unfinished devices after the deadline, pauses past the
 * failure threshold, finishes waves (soak, approval), completes the rollout, and notifies online
 * pending devices of the current wave while fewer than max-parallel online devices install.
 */
function advanceDraft(x: Draft, now: number, offlineAfterMs: number): void {
  const r = x.rollout;
  if (r.status !== "running") return;
  if (r.deadlineAt !== null && now >= r.deadlineAt) {
    for (const d of x.devices) if (!isTerminal(d.state)) x.setDevice(d, "skipped", { error: "deadline passed before the device finished" });
  }
  const t = tally(x.devices);
  if (t.failed > r.toleratedFailures) {
    x.setRollout({ status: "paused", reason: `failure threshold crossed: ${t.failed} of ${t.total} devices failed (${r.toleratedFailures} tolerated)` });
    return;
  }
  const last = r.waves.length;
  for (;;) {
    const wave = x.devices.filter((d) => d.wave === r.currentWave);
    if (!wave.every((d) => isTerminal(d.state))) break;
    if (r.currentWave >= last) {
      const s = tally(x.devices);
      if (s.healthy === 0 && s.failed > 0) x.setRollout({ status: "failed", reason: `no device took the release: ${s.failed} failed, ${s.skipped} skipped` });
      else x.setRollout({ status: "completed", reason: `${s.healthy} healthy, ${s.failed} failed, ${s.skipped} skipped`, waveFinishedAt: r.waveFinishedAt ?? now });
      return;
    }
    if (r.waveFinishedAt === null) x.setRollout({ waveFinishedAt: now });
    const soaked = now >= (r.waveFinishedAt ?? now) + r.spec.soakMs;
    const approved = !r.spec.approveEachWave || r.approvedWave > r.currentWave;
    if (!soaked || !approved) return;
    x.setRollout({ currentWave: r.currentWave + 1, waveFinishedAt: null });
  }
  const online = (d: RolloutDeviceView) => isOnline(d, now, offlineAfterMs);
  let slots = r.spec.maxParallel > 0 ? r.spec.maxParallel - x.devices.filter((d) => IN_FLIGHT.has(d.state) && online(d)).length : Infinity;
  for (const d of x.devices) {
    if (slots <= 0) break;
    if (d.wave === r.currentWave && d.state === "pending" && online(d)) {
      x.notify(d);
      slots--;
    }
  }
}

/** The changes that move a rollout forward now, if any. */
export function advance(rollout: RolloutRow, devices: RolloutDeviceView[], now: number, offlineAfterMs: number): RolloutChanges | undefined {
  const x = new Draft(rollout, devices);
  advanceDraft(x, now, offlineAfterMs);
  return x.result();
}

/** Records a device's release step (for this rollout's release only), then moves the rollout forward. */
export function onStep(rollout: RolloutRow, devices: RolloutDeviceView[], deviceId: string, e: ReleaseStepEvent, now: number, offlineAfterMs: number): RolloutChanges | undefined {
  const x = new Draft(rollout, devices);
  const d = x.devices.find((v) => v.deviceId === deviceId);
  const state = STEP_STATE[e.step];
  const ours = e.name === rollout.releaseName && e.targetPath.startsWith(`${rollout.releaseName}/${rollout.releaseCounter}/`);
  // Only a device this rollout notified moves, and never out of a final state: a late or
  // repeated report cannot undo a decision.
  if (d && state && ours && IN_FLIGHT.has(d.state) && (rollout.status === "running" || rollout.status === "paused")) {
    x.setDevice(d, state, { bytesDone: e.bytesDone, bytesTotal: e.bytesTotal, error: e.error });
  }
  advanceDraft(x, now, offlineAfterMs);
  return x.result();
}

export type AdminAction = { kind: "pause"; by: string } | { kind: "resume" } | { kind: "approve" } | { kind: "abort"; rollBack: boolean; by: string };

/** An admin's action; throws an Error with a message for a person when it does not apply. */
export function onAdminAction(rollout: RolloutRow, devices: RolloutDeviceView[], a: AdminAction, now: number, offlineAfterMs: number): RolloutChanges | undefined {
  const x = new Draft(rollout, devices);
  const r = x.rollout;
  const active = r.status === "running" || r.status === "paused";
  if (!active) throw new ActionRefused(`rollout ${r.id} is ${r.status}`);
  switch (a.kind) {
    case "pause":
      if (r.status === "paused") throw new ActionRefused(`rollout ${r.id} is already paused`);
      x.setRollout({ status: "paused", reason: `paused by ${a.by}` });
      return x.result();
    case "resume": {
      if (r.status === "running") throw new ActionRefused(`rollout ${r.id} is running`);
      // Resuming accepts the failures so far: only new ones count against the threshold.
      const failed = tally(x.devices).failed;
      x.setRollout({ status: "running", reason: "", toleratedFailures: Math.max(r.toleratedFailures, failed) });
      break;
    }
    case "approve":
      if (!r.spec.approveEachWave) throw new ActionRefused(`rollout ${r.id} does not wait for approvals`);
      if (r.approvedWave > r.currentWave) throw new ActionRefused(`wave ${r.currentWave + 1} is already approved`);
      if (r.currentWave >= r.waves.length) throw new ActionRefused(`rollout ${r.id} is on its last wave`);
      x.setRollout({ approvedWave: r.currentWave + 1 });
      break;
    case "abort": {
      x.setRollout({ status: "aborted", reason: `aborted by ${a.by}${a.rollBack ? ", updated devices returned to their previous release" : ""}` });
      if (a.rollBack) {
        x.changes.rollBack = x.devices.filter((d) => (d.state === "healthy" || IN_FLIGHT.has(d.state)) && d.notifiedAt !== null && d.previousCounter > 0).map((d) => d.deviceId);
      }
      return x.result();
    }
  }
  advanceDraft(x, now, offlineAfterMs);
  return x.result();
}

/** An admin action that does not apply to the rollout in its state (FailedPrecondition). */
export class ActionRefused extends Error {
  override readonly name = "ActionRefused";
}
