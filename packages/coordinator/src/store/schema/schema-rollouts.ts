/** Tables of rollouts (migration 0008_rollouts). Times are ms; JSON as text. */
export interface RolloutTables {
  rollouts: {
    id: string;
    org_id: string;
    release_name: string;
    release_version: string;
    release_counter: number;
    /** The RolloutSpec as given, JSON. */
    spec: string;
    /** The waves after dropping empty ones: [{ number, entry }], JSON. */
    waves: string;
    /** Devices the selector matched that cannot take the release: [{ id, name, reason }], JSON. */
    ineligible: string;
    status: string;
    reason: string;
    current_wave: number;
    /** When the current wave finished (its soak started); null while it runs. */
    wave_finished_at: number | null;
    /** The highest wave approved to start (approve_each_wave). */
    approved_wave: number;
    tolerated_failures: number;
    deadline_at: number | null;
    created_by: string;
    created_at: number;
    updated_at: number;
    /** Grows by one with every committed change, for watchers. */
    version: number;
    /** Migration 0018_rollout_counters: wave → device state → count, JSON (see RolloutCounts). */
    counts: string | null;
  };
  rollout_devices: {
    rollout_id: string;
    org_id: string;
    device_id: string;
    name: string;
    wave: number;
    position: number;
    state: string;
    bytes_done: number;
    bytes_total: number;
    error: string;
    previous_version: string;
    previous_counter: number;
    /** After an abort with roll-back: the counter of the release the device is returned with (0: none). */
    rollback_counter: number;
    /** When the device was told to install (its desired release set), or null. */
    notified_at: number | null;
    updated_at: number;
  };
  /** Which running or paused rollout holds a device: one at most, by primary key. */
  rollout_claims: {
    device_id: string;
    org_id: string;
    rollout_id: string;
  };
}
