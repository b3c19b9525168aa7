/**
 * The artifact store on a temporary directory: each organization's upload is its own, an
 * artifact on disk is complete only for an organization that owns it, and the bytes are stored
 * once however many organizations upload them.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { openSqliteStore, type Store } from "../store/index.ts";
import { ArtifactStore } from "./artifact-store.ts";
import { StorageQuotas } from "./storage-quota.ts";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const body = (b: Buffer) => Readable.from([b]);

const dir = useTempDir("flotilla-artifacts-");
let store: ArtifactStore;
beforeEach(async () => {
  store = new ArtifactStore(dir.path);
});

const files = (sub: string) => readdir(join(dir.path, sub)).catch(() => [] as string[]);

describe("ArtifactStore", () => {
  const data = randomBytes(10_000);
  const sha = sha256(data);
  const a = { owner: "org_a", owns: false };
  const b = { owner: "org_b", owns: false };

  it("keeps each organization's upload apart, and shows another's artifact as complete to no one who does not own it", async () => {
    expect(await store.append(a, sha, data.length, 0, body(data.subarray(0, 4000)), false)).toEqual({ complete: false, offset: 4000 });
    // Another organization's upload starts from nothing, and may not write at A's offset.
    expect(await store.state(b, sha, data.length)).toEqual({ complete: false, offset: 0 });
    await expect(store.append(b, sha, data.length, 4000, body(data.subarray(4000)), true)).rejects.toMatchObject({ status: 409 });

    expect(await store.append(a, sha, data.length, 4000, body(data.subarray(4000)), true)).toEqual({ complete: true, length: data.length });
    expect(await files("uploads")).toEqual([]);
    expect(await files("sha256")).toEqual([sha]);
    expect(await store.state({ ...a, owns: true }, sha, data.length)).toEqual({ complete: true, length: data.length });
    // On disk, but B has not uploaded it: not complete for B, whichever way it asks.
    expect(await store.state(b, sha, data.length)).toEqual({ complete: false, offset: 0 });
    expect(await store.append(b, sha, data.length, 0, body(Buffer.alloc(0)), false)).toEqual({ complete: false, offset: 0 });
    expect(await store.uploaded("org_b", sha, data.length)).toBe(0);
    // Nor does its length leak to B: a wrong length is just another upload.
    expect(await store.state(b, sha, data.length + 1)).toEqual({ complete: false, offset: 0 });
  });

  it("checks the bytes of an organization uploading an artifact already on disk, then keeps one copy", async () => {
    await store.append(a, sha, data.length, 0, body(data), true);

    const forged = Buffer.from(data);
    forged[0] = forged[0]! ^ 1;
    await expect(store.append(b, sha, data.length, 0, body(forged), true)).rejects.toMatchObject({ status: 422 });
    expect(await store.state(b, sha, data.length)).toEqual({ complete: false, offset: 0 });
    await expect(store.append(b, sha, data.length, 0, body(data.subarray(0, 100)), true)).rejects.toMatchObject({ status: 400 });
    await expect(store.append(b, sha, data.length, 0, body(Buffer.concat([data, data.subarray(0, 1)])), false)).rejects.toMatchObject({ status: 413 });
    expect(await files("uploads")).toEqual([]);

    expect(await store.append(b, sha, data.length, 0, body(data.subarray(0, 5000)), false)).toEqual({ complete: false, offset: 5000 });
    expect(await store.uploaded("org_b", sha, data.length)).toBe(5000);
    expect(await store.append(b, sha, data.length, 5000, body(data.subarray(5000)), true)).toEqual({ complete: true, length: data.length });
    expect(await files("uploads")).toEqual([]);
    expect(await files("sha256")).toEqual([sha]);
    expect(sha256(await readFile(store.path(sha)))).toBe(sha);
  });

  it("does not read the body for an organization that owns the artifact already", async () => {
    await store.append(a, sha, data.length, 0, body(data), true);
    const garbage = Readable.from([Buffer.from("not the artifact")]);
    expect(await store.append({ ...a, owns: true }, sha, data.length, 0, garbage, true)).toEqual({ complete: true, length: data.length });
    expect(sha256(await readFile(store.path(sha)))).toBe(sha);
  });
});

describe("abandoned uploads", () => {
  const DAY = 86_400_000;
  const data = randomBytes(10_000);
  const sha = sha256(data);
  let db: Store;
  let quotas: StorageQuotas;
  beforeEach(async () => {
    db = await openSqliteStore(join(dir.path, "db", "flotilla.db"));
    await db.access.createOrg({ id: "org_a", name: "acme", createdAt: Date.now() });
    quotas = new StorageQuotas(db, { storageQuota: 15_000, storageQuotaOrgs: {} });
    store = new ArtifactStore(join(dir.path, "artifacts"), quotas);
  });
  afterEach(async () => {
    await db.close();
  });
  const a = { owner: "org_a", owns: false };
  const parts = () => readdir(join(dir.path, "artifacts", "uploads")).catch(() => [] as string[]);

  it("are deleted once older than the sweep's age, giving their reserved room back; newer ones stay", async () => {
    expect(await store.append(a, sha, data.length, 0, body(data.subarray(0, 100)), false)).toEqual({ complete: false, offset: 100 });
    expect(await db.storage.usage("org_a")).toEqual({ usedBytes: 0, reservedBytes: data.length });
    await expect(store.admits(a, sha256(Buffer.from("other")), 6000)).rejects.toMatchObject({ status: 413 });

    expect(await store.sweep(DAY, Date.now())).toBe(0);
    expect(await parts()).toHaveLength(1);
    expect(await store.sweep(DAY, Date.now() + DAY + 60_000)).toBe(1);
    expect(await parts()).toEqual([]);
    expect(await db.storage.usage("org_a")).toEqual({ usedBytes: 0, reservedBytes: 0 });
    expect(await store.state(a, sha, data.length)).toEqual({ complete: false, offset: 0 });
    await store.admits(a, sha256(Buffer.from("other")), 6000);

    // Started again, the upload completes and is charged once.
    expect(await store.append(a, sha, data.length, 0, body(data), true)).toEqual({ complete: true, length: data.length });
    expect(await db.storage.usage("org_a")).toEqual({ usedBytes: data.length, reservedBytes: 0 });
  });

  it("deletes part files no reservation names (left from before quotas, or by a crash)", async () => {
    await mkdir(join(dir.path, "artifacts", "uploads"), { recursive: true });
    await writeFile(join(dir.path, "artifacts", "uploads", "0123456789abcdef-x-1.part"), "x");
    expect(await store.sweep(DAY, Date.now())).toBe(0);
    expect(await store.sweep(DAY, Date.now() + 2 * DAY)).toBe(1);
    expect(await parts()).toEqual([]);
  });

  it("refuses, up front and keeping nothing, an upload that does not fit, and gives back the room of one that fails", async () => {
    const big = randomBytes(6000);
    expect(await store.append(a, sha, data.length, 0, body(data), true)).toEqual({ complete: true, length: data.length });
    await expect(store.append(a, sha256(big), big.length, 0, body(big), true)).rejects.toMatchObject({
      status: 413,
      message: "this upload of 5.9 KiB would pass organization acme's storage quota of 14.6 KiB: 9.8 KiB is in use (0 B of it by unfinished uploads)",
    });
    expect(await parts()).toEqual([]);
    const small = randomBytes(3000);
    await expect(store.append(a, sha256(small), small.length, 0, body(small.subarray(0, 10)), true)).rejects.toMatchObject({ status: 400 });
    await expect(store.append(a, sha256(small), small.length, 0, body(Buffer.concat([small, small])), false)).rejects.toMatchObject({ status: 413 });
    await expect(store.append(a, sha256(small), small.length, 0, body(randomBytes(3000)), true)).rejects.toMatchObject({ status: 422 });
    expect(await parts()).toEqual([]);
    expect(await db.storage.usage("org_a")).toEqual({ usedBytes: data.length, reservedBytes: 0 });
  });
});
