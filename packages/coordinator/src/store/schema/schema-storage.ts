/** Tables of storage accounting (migration 0012_storage_quotas). */
export interface StorageTables {
  /** Each organization's storage counter: what it is charged for, and what unfinished uploads hold. */
  storage_usage: { org_id: string; used_bytes: number; reserved_bytes: number };
  /** What an organization is charged for, once each: its artifacts and NARs. */
  storage_charges: { org_id: string; kind: string; object_key: string; bytes: number; created_at: number };
  /** Room held by an unfinished upload, until it completes, fails or is swept as abandoned. */
  storage_reservations: { org_id: string; upload_key: string; bytes: number; created_at: number; touched_at: number };
}
