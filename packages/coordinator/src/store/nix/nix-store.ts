import type { Kysely, Selectable } from "kysely";
import type { StoreAdapter } from "../adapter.ts";
import type { Database } from "../schema/schema.ts";
import { num } from "../columns.ts";

/** A Nix signing key of an organization. */
export interface NixKeyRow {
  orgId: string;
  name: string;
  /** Raw ed25519 public key, base64. */
  publicKey: string;
  /** The sealed secret seed (see nixcache/nix-keys.ts), or null when only the public half is known. */
  sealedSecret: string | null;
  createdAt: number;
}

/** What the binary cache knows of one store path of an organization. Hashes are sha256 hex. */
export interface NixPathRow {
  orgId: string;
  hashPart: string;
  storePath: string;
  fileHash: string;
  fileSize: number;
  narHash: string;
  narSize: number;
  /** Reference base names. */
  references: string[];
  deriver: string;
  sigs: string[];
  ca: string;
  createdAt: number;
}

/** Storage of the Nix binary cache: keys and path metadata, every call scoped by organization. */
export interface NixStore {
  /** Returns false when the organization already has a key of that name. */
  addKey(key: NixKeyRow): Promise<boolean>;
  listKeys(orgId: string): Promise<NixKeyRow[]>;
  deleteKey(orgId: string, name: string): Promise<boolean>;

  /** Records that the organization uploaded the NAR file with this hash (idempotent). */
  recordNar(orgId: string, fileHash: string, now: number): Promise<void>;
  /** Whether the organization uploaded the NAR file with this hash. */
  hasNar(orgId: string, fileHash: string): Promise<boolean>;

  /**
   * Adds the path's metadata unless the organization's cache already has the path: a narinfo,
   * once written, is never replaced. Returns undefined when it was added, else the stored row.
   */
  addPath(path: NixPathRow): Promise<NixPathRow | undefined>;
  getPath(orgId: string, hashPart: string): Promise<NixPathRow | undefined>;
  /** The hash parts among `hashParts` the organization's cache holds. */
  existingPaths(orgId: string, hashParts: string[]): Promise<Set<string>>;
  /** Whether some path of the organization is stored in the NAR file with this hash. */
  hasFile(orgId: string, fileHash: string): Promise<boolean>;
}

function toPath(r: Selectable<Database["nix_paths"]>): NixPathRow {
  return {
    orgId: r.org_id,
    hashPart: r.hash_part,
    storePath: r.store_path,
    fileHash: r.file_hash,
    fileSize: num(r.file_size),
    narHash: r.nar_hash,
    narSize: num(r.nar_size),
    references: JSON.parse(r.refs) as string[],
    deriver: r.deriver,
    sigs: JSON.parse(r.sigs) as string[],
    ca: r.ca,
    createdAt: num(r.created_at),
  };
}

/** NixStore over Kysely, for SQLite and PostgreSQL alike. */
export class KyselyNixStore implements NixStore {
  constructor(
    private readonly db: Kysely<Database>,
    readonly adapter: StoreAdapter,
  ) {}

  async addKey(key: NixKeyRow): Promise<boolean> {
    const r = await this.db
      .insertInto("nix_keys")
      .values({ org_id: key.orgId, name: key.name, public_key: key.publicKey, sealed_secret: key.sealedSecret, created_at: key.createdAt })
      .onConflict((oc) => oc.columns(["org_id", "name"]).doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0) > 0;
  }

  async listKeys(orgId: string): Promise<NixKeyRow[]> {
    const rows = await this.db.selectFrom("nix_keys").selectAll().where("org_id", "=", orgId).orderBy("name").execute();
    return rows.map((r) => ({ orgId: r.org_id, name: r.name, publicKey: r.public_key, sealedSecret: r.sealed_secret, createdAt: num(r.created_at) }));
  }

  async deleteKey(orgId: string, name: string): Promise<boolean> {
    const r = await this.db.deleteFrom("nix_keys").where("org_id", "=", orgId).where("name", "=", name).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async recordNar(orgId: string, fileHash: string, now: number): Promise<void> {
    await this.db
      .insertInto("nix_nars")
      .values({ org_id: orgId, file_hash: fileHash, created_at: now })
      .onConflict((oc) => oc.columns(["org_id", "file_hash"]).doNothing())
      .execute();
  }

  async hasNar(orgId: string, fileHash: string): Promise<boolean> {
    const r = await this.db.selectFrom("nix_nars").select("file_hash").where("org_id", "=", orgId).where("file_hash", "=", fileHash).executeTakeFirst();
    return r !== undefined;
  }

  async addPath(p: NixPathRow): Promise<NixPathRow | undefined> {
    const values = {
      org_id: p.orgId,
      hash_part: p.hashPart,
      store_path: p.storePath,
      file_hash: p.fileHash,
      file_size: p.fileSize,
      nar_hash: p.narHash,
      nar_size: p.narSize,
      refs: JSON.stringify(p.references),
      deriver: p.deriver,
      sigs: JSON.stringify(p.sigs),
      ca: p.ca,
      created_at: p.createdAt,
    };
    const r = await this.db
      .insertInto("nix_paths")
      .values(values)
      .onConflict((oc) => oc.columns(["org_id", "hash_part"]).doNothing())
      .executeTakeFirst();
    if (Number(r.numInsertedOrUpdatedRows ?? 0) > 0) return undefined;
    const existing = await this.getPath(p.orgId, p.hashPart);
    if (!existing) throw new Error(`nix path ${p.hashPart} neither inserted nor found`);
    return existing;
  }

  async getPath(orgId: string, hashPart: string): Promise<NixPathRow | undefined> {
    const r = await this.db.selectFrom("nix_paths").selectAll().where("org_id", "=", orgId).where("hash_part", "=", hashPart).executeTakeFirst();
    return r && toPath(r);
  }

  async existingPaths(orgId: string, hashParts: string[]): Promise<Set<string>> {
    const out = new Set<string>();
    for (let i = 0; i < hashParts.length; i += 500) {
      const chunk = hashParts.slice(i, i + 500);
      const rows = await this.db.selectFrom("nix_paths").select("hash_part").where("org_id", "=", orgId).where("hash_part", "in", chunk).execute();
      for (const r of rows) out.add(r.hash_part);
    }
    return out;
  }

  async hasFile(orgId: string, fileHash: string): Promise<boolean> {
    const r = await this.db.selectFrom("nix_paths").select("hash_part").where("org_id", "=", orgId).where("file_hash", "=", fileHash).executeTakeFirst();
    return r !== undefined;
  }
}
