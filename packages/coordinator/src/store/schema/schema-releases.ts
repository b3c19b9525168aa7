/** Tables of signed releases (migrations 0004_releases, 0010_artifact_owners, 0013_removed_releases, 0014_device_control). Times are ms; JSON as text. */
export interface ReleaseTables {
  releases: {
    org_id: string;
    name: string;
    counter: number;
    version: string;
    kind: string;
    target_path: string;
    sha256: string;
    length: number;
    /** The signed custom.flotilla object. */
    meta: string;
    created_at: number;
  };
  device_releases: {
    org_id: string;
    device_id: string;
    name: string;
    desired_target: string;
    desired_counter: number;
    desired_version: string;
    desired_kind: string;
    desired_at: number;
    current_version: string;
    current_counter: number;
    /** Migration 0014_device_control: running, stopped or removed (undeployed). */
    run_state: string;
    restart_gen: number;
    /** 1: an undeploy removes the release's data directory too. */
    purge_data: number;
    control_action: string;
    control_by: string;
    control_at: number;
    /** What the agent last reported after a control command: stopped, started, restarted, removed, control-failed. */
    reported_state: string;
    reported_at: number;
    reported_error: string;
  };
  release_steps: {
    org_id: string;
    device_id: string;
    /** The outbox seq of the agent's "release" stream: unique per device. */
    seq: number;
    time: number;
    name: string;
    target_path: string;
    step: string;
    bytes_done: number;
    bytes_total: number;
    error: string;
  };
  /** Releases removed with `release rm` (migration 0013_removed_releases): their counters are never given again. */
  removed_releases: ReleaseTables["releases"] & { removed_at: number };
  /** Organizations that uploaded an artifact's bytes themselves, and so may release it. */
  artifact_owners: {
    org_id: string;
    sha256: string;
    length: number;
    created_at: number;
  };
}
