import type { NixTables } from "./schema-nix.ts";
import type { ReleaseTables } from "./schema-releases.ts";
import type { ReplicaTables } from "./schema-replicas.ts";
import type { RolloutTables } from "./schema-rollouts.ts";
import type { StorageTables } from "./schema-storage.ts";
import type { TelemetryTables } from "./schema-telemetry.ts";

/** Table shapes as Kysely sees them. Times are bigint milliseconds; booleans 0/1; JSON as text. */
export interface Database extends NixTables, TelemetryTables, ReleaseTables, RolloutTables, StorageTables, ReplicaTables {
  orgs: { id: string; name: string; created_at: number };
  admin_keys: {
    id: string;
    org_id: string;
    /** Added by migration 0002; set for every key since. */
    member_id: string | null;
    name: string;
    public_key: string;
    role: string;
    created_at: number;
    revoked_at: number | null;
  };
  sessions: {
    token_hash: string;
    org_id: string;
    principal_kind: string;
    principal_id: string;
    created_at: number;
    expires_at: number;
  };
  nonces: { nonce: string; expires_at: number };
  join_tokens: {
    id: string;
    org_id: string;
    secret_hash: string;
    labels: string;
    uses_allowed: number;
    uses: number;
    expires_at: number;
    auto_approve: number;
    created_at: number;
    revoked_at: number | null;
  };
  devices: {
    id: string;
    org_id: string;
    name: string;
    public_key: string;
    lifecycle: string;
    labels: string;
    facts: string;
    agent_version: string;
    capabilities: string;
    generation: number;
    observed_generation: number;
    connected: number;
    last_seen_at: number | null;
    join_token_id: string | null;
    created_at: number;
    updated_at: number;
  };
  device_streams: { device_id: string; stream: string; acked_seq: number };
  telemetry_retention: { org_id: string; log_retention_ms: number; metric_retention_ms: number };
  device_moves: { device_id: string; from_org: string; to_org: string; endorsement: string; moved_at: number };
  settings: { key: string; value: string };
  members: {
    id: string;
    org_id: string;
    name: string;
    role: string;
    password_hash: string | null;
    created_at: number;
    removed_at: number | null;
  };
  api_tokens: {
    id: string;
    org_id: string;
    name: string;
    role: string;
    secret_hash: string;
    created_by: string;
    created_at: number;
    expires_at: number;
    revoked_at: number | null;
  };
  audit_log: {
    org_id: string;
    seq: number;
    time: number;
    actor: string;
    action: string;
    target: string;
    source: string;
    outcome: string;
    detail: string;
    prev_hash: string;
    hash: string;
  };
  audit_heads: { org_id: string; seq: number; hash: string };
}
