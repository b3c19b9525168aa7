/** Tables of replicas sharing one database (migration 0019_replicas). */
export interface ReplicaTables {
  leases: { name: string; holder: string; expires_at: number };
  replicas: { id: string; address: string; started_at: number; seen_at: number };
  replica_identity: { singleton: number; key_id: string; updated_at: number };
}
