/** Tables of the Nix binary cache (migration 0007_nix). */
export interface NixTables {
  nix_keys: {
    org_id: string;
    name: string;
    /** Raw ed25519 public key, base64. */
    public_key: string;
    /** The secret seed sealed by the coordinator (nixcache/nix-keys.ts), or null for a public-only key. */
    sealed_secret: string | null;
    created_at: number;
  };
  /** NAR files an organization uploaded: a narinfo may name only its own organization's. */
  nix_nars: { org_id: string; file_hash: string; created_at: number };
  nix_paths: {
    org_id: string;
    /** The 32-character hash part of the store path. */
    hash_part: string;
    store_path: string;
    /** sha256 of the NAR file as stored, hex: its name in the content-addressed folder. */
    file_hash: string;
    file_size: number;
    nar_hash: string;
    nar_size: number;
    /** JSON array of reference base names. */
    refs: string;
    deriver: string;
    /** JSON array of `name:base64` signatures. */
    sigs: string;
    ca: string;
    created_at: number;
  };
}
