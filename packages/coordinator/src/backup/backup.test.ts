import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import SQLite from "better-sqlite3";
import { generateIdentity, saveIdentity } from "@flotilla/protocol";
import { tempDir } from "@flotilla/protocol/testing";
import { afterEach, describe, expect, it } from "vitest";
import { openSqliteStore } from "../store/sqlite.ts";
import { backupCoordinator, restoreCoordinator } from "./backup.ts";
import { archiveEnd, ArchiveError, entryHeader, entryPadding } from "./tar.ts";
import { verifySqlite } from "./verify.ts";

const dirs: string[] = [];
async function dir(): Promise<string> {
  const d = await tempDir("flotilla-backup-test-");
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

const hex = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** A data directory as a coordinator leaves it: keys, a migrated database, an artifact a release names, TUF files. */
async function dataDir(opts: { releaseArtifact?: boolean } = {}): Promise<{ dir: string; artifact: Buffer }> {
  const d = await dir();
  await saveIdentity(join(d, "coordinator.key"), generateIdentity());
  await saveIdentity(join(d, "online.key"), generateIdentity());
  await (await openSqliteStore(join(d, "flotilla.db"))).close();
  const artifact = randomBytes(300_000);
  const sha = hex(artifact);
  await mkdir(join(d, "artifacts", "sha256"), { recursive: true, mode: 0o700 });
  if (opts.releaseArtifact !== false) await writeFile(join(d, "artifacts", "sha256", sha), artifact, { mode: 0o600 });
  await mkdir(join(d, "artifacts", "uploads"), { recursive: true });
  await writeFile(join(d, "artifacts", "uploads", "abc.part"), "unfinished");
  const db = new SQLite(join(d, "flotilla.db"));
  db.pragma("foreign_keys = OFF");
  db.prepare(
    "INSERT INTO releases (org_id, name, counter, version, kind, target_path, sha256, length, meta, created_at) VALUES ('o', 'app', 1, '1.0.0', 'bundle', 'app/1', ?, ?, '{}', 0)",
  ).run(sha, artifact.length);
  const nar = randomBytes(1000);
  await mkdir(join(d, "nix", "sha256"), { recursive: true, mode: 0o700 });
  await writeFile(join(d, "nix", "sha256", hex(nar)), nar, { mode: 0o600 });
  db.prepare(
    "INSERT INTO nix_paths (org_id, hash_part, store_path, file_hash, file_size, nar_hash, nar_size, refs, deriver, sigs, ca, created_at) VALUES ('o', 'h', '/nix/store/h-x', ?, 1000, 'sha256:x', 1000, '[]', '', '[]', '', 0)",
  ).run(hex(nar));
  db.close();
  const org = "x".repeat(64);
  await mkdir(join(d, "tuf", org), { recursive: true, mode: 0o700 });
  await writeFile(join(d, "tuf", org, "1.root.json"), "{}\n", { mode: 0o644 });
  // A name longer than ustar holds, to go through an extended header.
  await writeFile(join(d, "tuf", org, `${"long-".repeat(30)}.json`), "{}\n", { mode: 0o640 });
  await chmod(join(d, "tuf", org, `${"long-".repeat(30)}.json`), 0o640);
  return { dir: d, artifact };
}

/** A gzip'd archive of hand-made entries. */
async function craft(path: string, entries: { path: string; data: Buffer; type?: "file" | "dir" }[], end = true): Promise<void> {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    blocks.push(entryHeader({ path: e.path, type: e.type ?? "file", mode: 0o600, size: e.data.length, mtimeMs: 0 }), e.data, entryPadding(e.data.length));
  }
  if (end) blocks.push(archiveEnd());
  await pipeline(Readable.from(blocks), createGzip(), createWriteStream(path));
}

describe("coordinator backup", () => {
  it("restores every file with its bytes and mode, the database from its snapshot, and not the unfinished uploads", async () => {
    const { dir: source, artifact } = await dataDir();
    const out = await dir();
    const file = join(out, "b.backup");
    const b = await backupCoordinator({ dataDir: source, to: file });
    expect(b.header.database).toBe("sqlite");
    expect(await readdir(out)).toEqual(["b.backup"]);

    const target = join(out, "restored");
    const r = await restoreCoordinator({ file, dataDir: target });
    expect(r.verify).toMatchObject({ integrity: "ok", artifacts: 1, nars: 1, missing: [] });
    expect(await readFile(join(target, "artifacts", "sha256", hex(artifact)))).toEqual(artifact);
    expect(await readFile(join(target, "coordinator.key"))).toEqual(await readFile(join(source, "coordinator.key")));
    expect((await stat(join(target, "coordinator.key"))).mode & 0o777).toBe(0o600);
    const org = "x".repeat(64);
    expect((await stat(join(target, "tuf", org, `${"long-".repeat(30)}.json`))).mode & 0o777).toBe(0o640);
    expect((await stat(join(target, "tuf", org, "1.root.json"))).mode & 0o777).toBe(0o644);
    expect(await readdir(join(target, "artifacts"))).toEqual(["sha256"]);
    const db = new SQLite(join(target, "flotilla.db"), { readonly: true });
    expect(db.prepare("SELECT version FROM releases").all()).toEqual([{ version: "1.0.0" }]);
    db.close();
    expect((await readdir(out)).sort()).toEqual(["b.backup", "restored"]);
  });

  it("refuses to restore a database that refers to an artifact the backup lacks, and verify lists it", async () => {
    const { dir: source } = await dataDir({ releaseArtifact: false });
    const report = await verifySqlite(source);
    expect(report.missing).toEqual([expect.stringMatching(/^artifacts\/sha256\/[0-9a-f]{64}$/)]);
    const out = await dir();
    const file = join(out, "b.backup");
    await backupCoordinator({ dataDir: source, to: file });
    await expect(restoreCoordinator({ file, dataDir: join(out, "restored") })).rejects.toThrow(/refers to files it lacks: artifacts\/sha256\//);
    expect(await readdir(out)).toEqual(["b.backup"]);
  });

  it("refuses an entry outside the data directory and writes nothing", async () => {
    const out = await dir();
    const file = join(out, "evil.backup");
    const head = Buffer.from(JSON.stringify({ format: "flotilla-backup", version: 1, coordinator: "x", pin: "x", database: "sqlite", createdAt: "" }));
    await craft(file, [
      { path: "flotilla-backup.json", data: head },
      { path: "../escaped", data: Buffer.from("x") },
    ]);
    await expect(restoreCoordinator({ file, dataDir: join(out, "restored") })).rejects.toThrow(ArchiveError);
    await expect(restoreCoordinator({ file, dataDir: join(out, "restored") })).rejects.toThrow(/outside the data directory/);
    expect(await readdir(out)).toEqual(["evil.backup"]);
  });

  it("refuses an archive whose file does not match its manifest, or that has none", async () => {
    const out = await dir();
    const head = Buffer.from(JSON.stringify({ format: "flotilla-backup", version: 1, coordinator: "x", pin: "x", database: "sqlite", createdAt: "" }));
    const manifest = Buffer.from(JSON.stringify({ "a.txt": { size: 1, mode: 0o600, sha256: hex(Buffer.from("a")) } }));
    const swapped = join(out, "swapped.backup");
    await craft(swapped, [
      { path: "flotilla-backup.json", data: head },
      { path: "a.txt", data: Buffer.from("b") },
      { path: "flotilla-backup-manifest.json", data: manifest },
    ]);
    await expect(restoreCoordinator({ file: swapped, dataDir: join(out, "r1") })).rejects.toThrow(/a\.txt does not match its checksum/);
    const cut = join(out, "cut.backup");
    await craft(cut, [
      { path: "flotilla-backup.json", data: head },
      { path: "a.txt", data: Buffer.from("a") },
    ]);
    await expect(restoreCoordinator({ file: cut, dataDir: join(out, "r2") })).rejects.toThrow(/no manifest/);
    const unended = join(out, "unended.backup");
    await craft(unended, [{ path: "flotilla-backup.json", data: head }], false);
    await expect(restoreCoordinator({ file: unended, dataDir: join(out, "r3") })).rejects.toThrow(/ends early/);
    expect((await readdir(out)).sort()).toEqual(["cut.backup", "swapped.backup", "unended.backup"]);
  });

  it("refuses a folder that is not a coordinator's data directory, and a file that exists", async () => {
    const empty = await dir();
    await expect(backupCoordinator({ dataDir: empty, to: join(empty, "b.backup") })).rejects.toThrow(/no coordinator key/);
    const { dir: source } = await dataDir();
    await writeFile(join(empty, "b.backup"), "keep me");
    await expect(backupCoordinator({ dataDir: source, to: join(empty, "b.backup") })).rejects.toThrow(/exists already/);
    await expect(backupCoordinator({ dataDir: source, to: join(source, "b.backup") })).rejects.toThrow(/inside the data directory/);
    expect(await readFile(join(empty, "b.backup"), "utf8")).toBe("keep me");
  });
});
