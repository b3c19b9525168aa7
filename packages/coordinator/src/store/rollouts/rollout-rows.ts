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

/** What one transition changes; applied in the transaction that read the state it was decided on. */
export interface RolloutChanges {
  rollout?: Partial<Pick<RolloutRow, "status" | "reason" | "currentWave" | "waveFinishedAt" | "approvedWave" | "toleratedFailures">>;
  devices?: { deviceId: string; state: RolloutDeviceState; error?: string; bytesDone?: number; bytesTotal?: number }[];
  /** Devices whose desired release becomes the rollout's (state becomes notified, or healthy if they run it already). */
  notify?: string[];
  /** Devices whose desired release returns to the one they ran before. */
  rollBack?: RollBackChange[];
  /** Devices the rollout no longer holds (their roll-back ended). */
  releaseClaims?: string[];
}
