/**
 * The rollout state machine as pure functions: given what one transaction read of a rollout (its
 * row, its wave counters, and only the device the event is about), what changes. The store
 * applies the result in that same transaction (store/rollouts/rollout-store.ts `transition`), so
 * a crash between transitions repeats nothing. Decisions work on counters, never on a list of
 * every device: a release step costs the same in a rollout of ten devices as in one of ten
 * thousand. Which devices to notify is a request (`NotifyRequest`) the store answers with one
 * indexed query.
 */
import { copyCounts, moveCount } from "../store/index.ts";
import type { RollBackChange, RolloutChanges, RolloutCounts, RolloutDeviceState, RolloutDeviceView, RolloutRow, RolloutSnapshot, StateCounts } from "../store/index.ts";

const TERMINAL: ReadonlySet<RolloutDeviceState> = new Set(["healthy", "failed", "rolled-back", "skipped"]);
const IN_FLIGHT: ReadonlySet<RolloutDeviceState> = new Set(["notified", "downloading", "verifying", "activating", "health-checking"]);
const ALL_STATES: readonly RolloutDeviceState[] = [
  "pending", "notified", "downloading", "verifying", "activating", "health-checking", "healthy", "failed", "rolled-back", "skipped", "rolling-back",
];
/** States a passed deadline ends (skipped). */
const UNFINISHED: readonly RolloutDeviceState[] = ALL_STATES.filter((s) => !TERMINAL.has(s));

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

/** Which devices a transition may notify, by what caused it. */
type Scope =
  /** A tick, a start, an admin action: any online pending device of the current wave. */
  | { kind: "all" }
  /** A release step; `freed`: it ended an install, so a max-parallel slot opened. */
  | { kind: "step"; freed: boolean }
  /** A device opened its Watch stream: it alone is new to notify, unless the wave moved on. */
  | { kind: "connected"; deviceId: string };

/** Collects changes against a working copy, so later rules see earlier decisions. */
class Draft {
  readonly changes: RolloutChanges = {};
  readonly rollout: RolloutRow;
  readonly counts: RolloutCounts;
  readonly device: RolloutDeviceView | undefined;
  readonly devices: RolloutDeviceView[] | undefined;

  constructor(s: RolloutSnapshot) {
    this.rollout = { ...s.rollout };
    this.counts = copyCounts(s.counts);
    this.device = s.device && { ...s.device };
    this.devices = s.devices?.map((d) => (d.deviceId === s.device?.deviceId ? this.device! : { ...d }));
  }

  setRollout(patch: NonNullable<RolloutChanges["rollout"]>): void {
    Object.assign(this.rollout, patch);
    this.changes.rollout = { ...this.changes.rollout, ...patch };
  }

  setDevice(d: RolloutDeviceView, state: RolloutDeviceState, extra: { error?: string; bytesDone?: number; bytesTotal?: number } = {}): void {
    moveCount(this.counts, d.wave, d.state, state);
    d.state = state;
    Object.assign(d, extra);
    (this.changes.devices ??= []).push({ deviceId: d.deviceId, state, ...extra });
  }

  /** Every unfinished device becomes skipped (one statement in the store). */
  skipUnfinished(error: string): void {
    for (const [wave, c] of Object.entries(this.counts)) for (const s of UNFINISHED) moveCount(this.counts, Number(wave), s, "skipped", c[s] ?? 0);
    for (const d of [this.device, ...(this.devices ?? [])]) {
      if (d && !isTerminal(d.state)) Object.assign(d, { state: "skipped", error });
    }
    this.changes.skipUnfinished = error;
  }

  result(): RolloutChanges | undefined {
    const c = this.changes;
    return c.rollout || c.devices?.length || c.skipUnfinished || c.notify || c.rollBack?.length || c.releaseClaims?.length ? c : undefined;
  }
}

/** Counts per state, for reasons and summaries. */
export function tally(devices: readonly { state: RolloutDeviceState }[]) {
  const c: StateCounts = {};
  for (const d of devices) c[d.state] = (c[d.state] ?? 0) + 1;
  return tallyStates(c);
}

/** The same summary from counters: of one wave (`wave` given) or of the whole rollout. */
export function tallyCounts(counts: RolloutCounts, wave?: number) {
  if (wave !== undefined) return tallyStates(counts[wave] ?? {});
  const all: StateCounts = {};
  for (const c of Object.values(counts)) for (const [s, n] of Object.entries(c) as [RolloutDeviceState, number][]) all[s] = (all[s] ?? 0) + n;
  return tallyStates(all);
}

function tallyStates(c: StateCounts) {
  let healthy = 0, failed = 0, skipped = 0, inProgress = 0, pending = 0, inFlight = 0, total = 0;
  for (const [s, n] of Object.entries(c) as [RolloutDeviceState, number][]) {
    total += n;
    if (s === "healthy") healthy += n;
    else if (isFailure(s)) failed += n;
    else if (s === "skipped") skipped += n;
    else if (s === "pending") pending += n;
    else inProgress += n;
    if (IN_FLIGHT.has(s)) inFlight += n;
  }
  return { healthy, failed, skipped, inProgress, pending, inFlight, unfinished: total - healthy - failed - skipped, total };
}

/**
 * Moves a running rollout forward: skips unfinished devices after the deadline, pauses past the
 * failure threshold, finishes waves (soak, approval), completes the rollout, and asks the store
 * to notify online pending devices of the current wave while fewer than max-parallel devices
 * install. Only counters are read; asking for candidates only when some may be new (`scope`)
 * keeps a release step free of any query over devices.
 */
function advanceDraft(x: Draft, now: number, offlineAfterMs: number, scope: Scope): void {
  const r = x.rollout;
  if (r.status !== "running") return;
  if (r.deadlineAt !== null && now >= r.deadlineAt && tallyCounts(x.counts).unfinished > 0) {
    x.skipUnfinished("deadline passed before the device finished");
  }
  const t = tallyCounts(x.counts);
  if (t.failed > r.toleratedFailures) {
    x.setRollout({ status: "paused", reason: `failure threshold crossed: ${t.failed} of ${t.total} devices failed (${r.toleratedFailures} tolerated)` });
    return;
  }
  const last = r.waves.length;
  let waveMoved = false;
  for (;;) {
    if (tallyCounts(x.counts, r.currentWave).unfinished > 0) break;
    if (r.currentWave >= last) {
      const s = tallyCounts(x.counts);
      if (s.healthy === 0 && s.failed > 0) x.setRollout({ status: "failed", reason: `no device took the release: ${s.failed} failed, ${s.skipped} skipped` });
      else x.setRollout({ status: "completed", reason: `${s.healthy} healthy, ${s.failed} failed, ${s.skipped} skipped`, waveFinishedAt: r.waveFinishedAt ?? now });
      return;
    }
    if (r.waveFinishedAt === null) x.setRollout({ waveFinishedAt: now });
    const soaked = now >= (r.waveFinishedAt ?? now) + r.spec.soakMs;
    const approved = !r.spec.approveEachWave || r.approvedWave > r.currentWave;
    if (!soaked || !approved) return;
    x.setRollout({ currentWave: r.currentWave + 1, waveFinishedAt: null });
    waveMoved = true;
  }
  // Every device told to install holds its slot until it ends, also while offline: devices that
  // come back together then never exceed max-parallel (the deadline frees a slot held for good).
  const slots = r.spec.maxParallel > 0 ? r.spec.maxParallel - t.inFlight : Infinity;
  if (slots <= 0 || tallyCounts(x.counts, r.currentWave).pending === 0) return;
  const onlineSince = now - offlineAfterMs;
  if (scope.kind === "all" || waveMoved || (scope.kind === "step" && scope.freed && r.spec.maxParallel > 0)) {
    x.changes.notify = { wave: r.currentWave, limit: slots, onlineSince, wholeWave: true, ...(scope.kind === "connected" ? { deviceId: scope.deviceId } : {}) };
  } else if (scope.kind === "connected" && x.device?.deviceId === scope.deviceId && x.device.wave === r.currentWave && x.device.state === "pending") {
    x.changes.notify = { wave: r.currentWave, limit: 1, onlineSince, wholeWave: false, deviceId: scope.deviceId };
  }
}

/** The changes that move a rollout forward now, if any (a tick, a start, a restart). */
export function advance(s: RolloutSnapshot, now: number, offlineAfterMs: number): RolloutChanges | undefined {
  const x = new Draft(s);
  advanceDraft(x, now, offlineAfterMs, { kind: "all" });
  return x.result();
}

/**
 * A device opened its Watch stream (read it with `{ deviceId }`): it may be notified now, and
 * the rollout moves forward as on a tick, without looking for other devices to notify unless
 * the wave moved on.
 */
export function onConnected(s: RolloutSnapshot, deviceId: string, now: number, offlineAfterMs: number): RolloutChanges | undefined {
  const x = new Draft(s);
  advanceDraft(x, now, offlineAfterMs, { kind: "connected", deviceId });
  return x.result();
}

/** Records a device's release step (for this rollout's release only; read the device with `{ deviceId }`), then moves the rollout forward. */
export function onStep(s: RolloutSnapshot, deviceId: string, e: ReleaseStepEvent, now: number, offlineAfterMs: number): RolloutChanges | undefined {
  const x = new Draft(s);
  const rollout = x.rollout;
  const d = x.device?.deviceId === deviceId ? x.device : undefined;
  if (d?.state === "rolling-back") {
    onRollBackStep(x, d, e);
    return x.result();
  }
  const state = STEP_STATE[e.step];
  const ours = e.name === rollout.releaseName && e.targetPath.startsWith(`${rollout.releaseName}/${rollout.releaseCounter}/`);
  // Only a device this rollout notified moves, and never out of a final state: a late or
  // repeated report cannot undo a decision.
  let freed = false;
  if (d && state && ours && IN_FLIGHT.has(d.state) && (rollout.status === "running" || rollout.status === "paused")) {
    freed = !IN_FLIGHT.has(state);
    x.setDevice(d, state, { bytesDone: e.bytesDone, bytesTotal: e.bytesTotal, error: e.error });
  }
  advanceDraft(x, now, offlineAfterMs, { kind: "step", freed });
  return x.result();
}

/** A device returning to its previous release reported a step of that release. */
function onRollBackStep(x: Draft, d: RolloutDeviceView, e: ReleaseStepEvent): void {
  if (e.name !== x.rollout.releaseName || !e.targetPath.startsWith(`${e.name}/${d.rollbackCounter}/`)) return;
  const back = `${d.previousVersion} (#${d.rollbackCounter})`;
  if (e.step === "healthy") x.setDevice(d, "rolled-back", { error: `returned to ${back}` });
  else if (e.step === "failed" || e.step === "rolled-back") x.setDevice(d, "failed", { error: `returning to ${back} failed: ${e.error}` });
  else if (e.step === "downloading") x.setDevice(d, "rolling-back", { bytesDone: e.bytesDone, bytesTotal: e.bytesTotal });
  if (isTerminal(d.state)) (x.changes.releaseClaims ??= []).push(d.deviceId);
}

export type AdminAction =
  | { kind: "pause"; by: string }
  | { kind: "resume" }
  | { kind: "approve" }
  | {
      kind: "abort";
      rollBack: boolean;
      by: string;
      /**
       * With rollBack: for each previous release counter, the counter a device that took the
       * rollout's release installs to return to it (a re-signed copy above the rollout's
       * counter, or the previous release itself when it allows downgrades).
       */
      returnTo?: ReadonlyMap<number, number>;
    };

/** Whether an admin action needs every device read (an abort with roll-back decides per device). */
export function readFor(a: AdminAction): { allDevices?: boolean } {
  return a.kind === "abort" && a.rollBack ? { allDevices: true } : {};
}

/**
 * An admin's action; throws an Error with a message for a person when it does not apply. An
 * abort with roll-back needs the snapshot's `devices` (read with `readFor(a)`).
 */
export function onAdminAction(s: RolloutSnapshot, a: AdminAction, now: number, offlineAfterMs: number): RolloutChanges | undefined {
  const x = new Draft(s);
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
      const failed = tallyCounts(x.counts).failed;
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
      if (!a.rollBack) {
        x.setRollout({ status: "aborted", reason: `aborted by ${a.by}` });
        return x.result();
      }
      if (!x.devices) throw new Error("an abort with roll-back reads every device: transition with readFor(action)");
      const back = rollBackChanges(r, x.devices, a.returnTo ?? new Map());
      const returning = back.filter((b) => b.track).length;
      x.setRollout({ status: "aborted", reason: `aborted by ${a.by}; ${returning} device${returning === 1 ? "" : "s"} returning to their previous release` });
      if (back.length > 0) x.changes.rollBack = back;
      return x.result();
    }
  }
  advanceDraft(x, now, offlineAfterMs, { kind: "all" });
  return x.result();
}

/**
 * Where an abort with roll-back sends each device the rollout told to install, when it ran an
 * earlier release of the name before: a device that runs, or may be about to run, the rollout's
 * release installs the previous one through `returnTo` (it must, or the abort is refused: the
 * agent would refuse a lower counter); one that failed and still runs its previous release only
 * gets that back as its desired release, so it does not try the rollout's again.
 */
function rollBackChanges(r: RolloutRow, devices: RolloutDeviceView[], returnTo: ReadonlyMap<number, number>): RollBackChange[] {
  const out: RollBackChange[] = [];
  const missing = new Map<number, string>();
  for (const d of devices) {
    if (d.notifiedAt === null || d.previousCounter <= 0 || d.previousCounter >= r.releaseCounter) continue;
    const mayRunNew = d.state === "healthy" || d.state === "skipped" || IN_FLIGHT.has(d.state) || d.currentCounter === r.releaseCounter;
    if (!mayRunNew) {
      out.push({ deviceId: d.deviceId, counter: d.previousCounter, track: false });
      continue;
    }
    const counter = returnTo.get(d.previousCounter);
    if (counter === undefined) missing.set(d.previousCounter, d.previousVersion);
    else out.push({ deviceId: d.deviceId, counter, track: true });
  }
  if (missing.size > 0) {
    const list = [...missing].map(([c, v]) => `${r.releaseName} ${v} (#${c})`).join(", ");
    throw new ActionRefused(
      `cannot roll back: agents refuse a counter below the #${r.releaseCounter} they run, so ${list} must be signed again with a higher counter; ` +
        "`flotilla rollout abort --roll-back` does that with your signing key",
    );
  }
  return out;
}

/** An admin action that does not apply to the rollout in its state (FailedPrecondition). */
export class ActionRefused extends Error {
  override readonly name = "ActionRefused";
}
