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

  /** Every path of the organization's cache: its hash part, references (base names), NAR file and when it was added. */
  listPathLinks(orgId: string): Promise<NixPathLink[]>;
  /** Deletes these paths (by hash part) from the organization's cache; returns how many were deleted. */
  deletePaths(orgId: string, hashParts: string[]): Promise<number>;
  /**
   * NAR files the organization uploaded, recorded before `createdBefore`, that none of its
   * paths is stored in, at most `limit`.
   */
  unusedNars(orgId: string, createdBefore: number, limit: number): Promise<string[]>;
  /** Forgets that the organization uploaded the NAR file, unless one of its paths is stored in it; whether it was forgotten. */
  dropNar(orgId: string, fileHash: string): Promise<boolean>;
  /** Whether any organization (but `exceptOrgId`) has uploaded the NAR file or has a path stored in it. */
  narNeeded(fileHash: string, exceptOrgId?: string): Promise<boolean>;
}

/** A store path of an organization's cache, as garbage collection sees it. */
export interface NixPathLink {
  hashPart: string;
  references: string[];
  fileHash: string;
  createdAt: number;
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

  async listPathLinks(orgId: string): Promise<NixPathLink[]> {
    const rows = await this.db.selectFrom("nix_paths").select(["hash_part", "refs", "file_hash", "created_at"]).where("org_id", "=", orgId).execute();
    return rows.map((r) => ({ hashPart: r.hash_part, references: JSON.parse(r.refs) as string[], fileHash: r.file_hash, createdAt: num(r.created_at) }));
  }

  async deletePaths(orgId: string, hashParts: string[]): Promise<number> {
    let n = 0;
    for (let i = 0; i < hashParts.length; i += 500) {
      const r = await this.db.deleteFrom("nix_paths").where("org_id", "=", orgId).where("hash_part", "in", hashParts.slice(i, i + 500)).executeTakeFirst();
      n += Number(r.numDeletedRows);
    }
    return n;
  }

  async unusedNars(orgId: string, createdBefore: number, limit: number): Promise<string[]> {
    const rows = await this.db
      .selectFrom("nix_nars")
      .select("file_hash")
      .where("org_id", "=", orgId)
      .where("created_at", "<", createdBefore)
      .where((eb) =>
        eb.not(eb.exists(eb.selectFrom("nix_paths").select("hash_part").where("nix_paths.org_id", "=", orgId).whereRef("nix_paths.file_hash", "=", "nix_nars.file_hash"))),
      )
      .orderBy("created_at")
      .limit(limit)
      .execute();
    return rows.map((r) => r.file_hash);
  }

  async dropNar(orgId: string, fileHash: string): Promise<boolean> {
    const r = await this.db
      .deleteFrom("nix_nars")
      .where("org_id", "=", orgId)
      .where("file_hash", "=", fileHash)
      .where((eb) => eb.not(eb.exists(eb.selectFrom("nix_paths").select("hash_part").where("nix_paths.org_id", "=", orgId).where("nix_paths.file_hash", "=", fileHash))))
      .executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async narNeeded(fileHash: string, exceptOrgId?: string): Promise<boolean> {
    let nars = this.db.selectFrom("nix_nars").select("org_id").where("file_hash", "=", fileHash);
    let paths = this.db.selectFrom("nix_paths").select("org_id").where("file_hash", "=", fileHash);
    if (exceptOrgId !== undefined) {
      nars = nars.where("org_id", "!=", exceptOrgId);
      paths = paths.where("org_id", "!=", exceptOrgId);
    }
    if (await nars.executeTakeFirst()) return true;
    const path = await paths.executeTakeFirst();
    return path !== undefined;
  }
}
