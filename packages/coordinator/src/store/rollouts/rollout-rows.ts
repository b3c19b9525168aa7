/** The rows of rollouts and their devices, as the store reads and writes them. */
export type RolloutStatus = "running" | "paused" | "completed" | "aborted" | "failed";
export type RolloutDeviceState =
  | "pending"
  | "notified"
  | "downloading"
  | "verifying"
  | "activating"
  | "health-checking"
  | "healthy"
  | "failed"
  | "rolled-back"
  | "skipped"
  /** After an abort with roll-back: returning to its previous release, until it reports it healthy. */
  | "rolling-back";

/** A rollout's parameters as the admin gave them. */
export interface RolloutSpecRow {
  releaseName: string;
  releaseVersion: string;
  selector: string;
  waves: string[];
  maxParallel: number;
  failureThreshold: string;
  soakMs: number;
  approveEachWave: boolean;
  deadlineMs: number;
}

export interface RolloutRow {
  id: string;
  orgId: string;
  releaseName: string;
  releaseVersion: string;
  releaseCounter: number;
  spec: RolloutSpecRow;
  /** Waves after empty ones were dropped, numbered from 1. */
  waves: { number: number; entry: string }[];
  ineligible: { id: string; name: string; reason: string }[];
  status: RolloutStatus;
  reason: string;
  currentWave: number;
  waveFinishedAt: number | null;
  approvedWave: number;
  toleratedFailures: number;
  deadlineAt: number | null;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
  version: number;
}

export interface RolloutDeviceRow {
  rolloutId: string;
  orgId: string;
  deviceId: string;
  name: string;
  wave: number;
  position: number;
  state: RolloutDeviceState;
  bytesDone: number;
  bytesTotal: number;
  error: string;
  previousVersion: string;
  previousCounter: number;
  /** After an abort with roll-back: the counter of the release it is returned with (0: none). */
  rollbackCounter: number;
  notifiedAt: number | null;
  updatedAt: number;
}

/** A rollout device with the device's connection, as the engine reads it in a transition. */
export interface RolloutDeviceView extends RolloutDeviceRow {
  connected: boolean;
  lastSeenAt: number | null;
  /** The counter of the rollout's release name the device reports running (0: none). */
  currentCounter: number;
}

/** A device's desired release set back by an abort with roll-back. */
export interface RollBackChange {
  deviceId: string;
  /** The release counter that becomes the device's desired one. */
  counter: number;
  /**
   * Whether the device must install it (it runs, or may be about to run, the rollout's release):
   * it becomes rolling-back and the rollout keeps its claim until the device reports the outcome.
   * Otherwise the device already runs that release and only its desired state follows.
   */
  track: boolean;
}

/** How many devices of one wave are in each state (absent: none). */
export type StateCounts = Partial<Record<RolloutDeviceState, number>>;

/**
 * The rollout's wave counters: wave number → state → devices (migration 0018_rollout_counters
 * keeps them as JSON in the rollout's row). Every transition that changes a device's state
 * moves one count in the same transaction, under the rollout's row lock, so they always equal a
 * GROUP BY over rollout_devices and decisions never need to read every device.
 */
export type RolloutCounts = Record<number, StateCounts>;

/** Moves `n` devices of `wave` from state `from` to state `to` in `c` (in place). */
export function moveCount(c: RolloutCounts, wave: number, from: RolloutDeviceState, to: RolloutDeviceState, n = 1): void {
  if (from === to || n === 0) return;
  const w = (c[wave] ??= {});
  const left = (w[from] ?? 0) - n;
  if (left > 0) w[from] = left;
  else delete w[from];
  w[to] = (w[to] ?? 0) + n;
}

/** Counts of `devices`, by wave and state. */
export function countDevices(devices: readonly { wave: number; state: RolloutDeviceState }[]): RolloutCounts {
  const c: RolloutCounts = {};
  for (const d of devices) {
    const w = (c[d.wave] ??= {});
    w[d.state] = (w[d.state] ?? 0) + 1;
  }
  return c;
}

/** A deep copy of counters. */
export function copyCounts(c: RolloutCounts): RolloutCounts {
  const out: RolloutCounts = {};
  for (const [w, s] of Object.entries(c)) out[Number(w)] = { ...s };
  return out;
}

/**
 * What one transition reads under the rollout's lock: the rollout, its counters, and only the
 * device rows the event concerns. Nothing here grows with the rollout's size except `devices`,
 * which only an abort with roll-back asks for.
 */
export interface RolloutSnapshot {
  rollout: RolloutRow;
  counts: RolloutCounts;
  /** The device the event is about (a release step, a connection), when asked for and in the rollout. */
  device?: RolloutDeviceView;
  /** Every device of the rollout, only when the transition asked for them (`{ allDevices: true }`). */
  devices?: RolloutDeviceView[];
}

/** Which device rows a transition reads besides the rollout and its counters. */
export interface TransitionRead {
  /** The device an event is about. */
  deviceId?: string;
  /** Every device (abort with roll-back). */
  allDevices?: boolean;
}

/**
 * Which devices of a wave to tell to install: pending devices of `wave` that are online (Watch
 * stream open and seen at or after `onlineSince`), in plan order, at most `limit` (Infinity: all).
 * The store finds them with one indexed query (rollout_devices by rollout, wave, state,
 * position), so decisions need no list of devices.
 */
export interface NotifyRequest {
  wave: number;
  limit: number;
  onlineSince: number;
  /** False: only `deviceId` is a candidate (it just connected). */
  wholeWave: boolean;
  /** A device that just opened its Watch stream: online by that fact, whatever presence the database shows yet. */
  deviceId?: string;
}

/** What one transition changes; applied in the transaction that read the state it was decided on. */
export interface RolloutChanges {
  rollout?: Partial<Pick<RolloutRow, "status" | "reason" | "currentWave" | "waveFinishedAt" | "approvedWave" | "toleratedFailures">>;
  /** State changes of devices the transition read (the snapshot's `device` or `devices`). */
  devices?: { deviceId: string; state: RolloutDeviceState; error?: string; bytesDone?: number; bytesTotal?: number }[];
  /** Every device not finished yet (pending, installing) becomes skipped with this error: the deadline passed. */
  skipUnfinished?: string;
  /** Devices whose desired release becomes the rollout's (state becomes notified, or healthy if they run it already, or skipped if they are gone). */
  notify?: NotifyRequest;
  /** Devices whose desired release returns to the one they ran before. */
  rollBack?: RollBackChange[];
  /** Devices the rollout no longer holds (their roll-back ended). */
  releaseClaims?: string[];
}
