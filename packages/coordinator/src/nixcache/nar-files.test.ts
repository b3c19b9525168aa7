/**
 * NAR files within a storage quota, on a temporary directory and a real SQLite store: refused
 * uploads keep nothing, kept ones are charged once, abandoned ones are swept.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { StorageQuotas } from "../artifacts/storage-quota.ts";
import { openSqliteStore, type Store } from "../store/index.ts";
import { NarFiles } from "./nar-files.ts";

const DAY = 86_400_000;
const dir = useTempDir("flotilla-nars-");
let db: Store;
let files: NarFiles;
beforeEach(async () => {
  db = await openSqliteStore(join(dir.path, "db", "flotilla.db"));
  await db.access.createOrg({ id: "org_a", name: "acme", createdAt: Date.now() });
  files = new NarFiles(join(dir.path, "nix"), new StorageQuotas(db, { storageQuota: 20_000, storageQuotaOrgs: {} }));
});
afterEach(async () => {
  await db.close();
});

const hex = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const list = (sub: string) => readdir(join(dir.path, "nix", sub)).catch(() => [] as string[]);
const pieces = (b: Buffer) => Readable.from(Array.from({ length: Math.ceil(b.length / 1000) }, (_, i) => b.subarray(i * 1000, (i + 1) * 1000)));
const by = { orgId: "org_a" };

describe("NAR files within a quota", () => {
  it("charges a kept NAR once, and refuses one that would not fit, declared or streamed, keeping nothing", async () => {
    const nar = randomBytes(12_000);
    expect(await files.put(pieces(nar), 1 << 30, () => true, { ...by, declared: nar.length })).toMatchObject({ hex: hex(nar), kept: true });
    // Sent again (a retried copy), it costs nothing and is not held to the quota.
    expect(await files.put(pieces(nar), 1 << 30, () => true, { ...by, expected: hex(nar) })).toMatchObject({ kept: true });
    expect(await db.storage.usage("org_a")).toEqual({ usedBytes: 12_000, reservedBytes: 0 });

    const other = randomBytes(12_000);
    await expect(files.put(pieces(other), 1 << 30, () => true, { ...by, declared: other.length })).rejects.toMatchObject({ status: 413 });
    await expect(files.put(pieces(other), 1 << 30, () => true, by)).rejects.toMatchObject({ status: 413 });
    // Naming a NAR it is charged for does not let other bytes past the quota.
    await expect(files.put(pieces(other), 1 << 30, (h) => h === hex(nar), { ...by, expected: hex(other) })).rejects.toMatchObject({ status: 413 });
    await expect(files.put(pieces(Buffer.concat([other, other])), 1 << 30, () => true, { ...by, expected: hex(nar) })).rejects.toThrow(/larger than 12000 bytes/);
    // Not accepted (its hash is not its name): nothing kept, nothing held.
    expect(await files.put(pieces(randomBytes(5000)), 1 << 30, () => false, by)).toMatchObject({ kept: false });
    expect(await list("sha256")).toEqual([hex(nar)]);
    expect(await list("tmp")).toEqual([]);
    expect(await db.storage.usage("org_a")).toEqual({ usedBytes: 12_000, reservedBytes: 0 });
  });

  it("sweeps an upload abandoned by a crash: its temporary file and its reserved room", async () => {
    await mkdir(join(dir.path, "nix", "tmp"), { recursive: true });
    await writeFile(join(dir.path, "nix", "tmp", "1700000000000-00ff"), randomBytes(100));
    await db.storage.reserve("org_a", "nar:1700000000000-00ff", 8000, 20_000, Date.now());
    expect(await files.sweep(DAY, Date.now())).toBe(0);
    expect(await files.sweep(DAY, Date.now() + 2 * DAY)).toBe(1);
    expect(await list("tmp")).toEqual([]);
    expect(await db.storage.usage("org_a")).toEqual({ usedBytes: 0, reservedBytes: 0 });
  });
});
