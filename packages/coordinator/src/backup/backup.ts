/**
 * Online backup of a coordinator's data directory into one file, and its restore onto a new
 * data directory.
 *
 * A backup is a gzip-compressed tar: `flotilla-backup.json` (what it is) first, then the
 * database, then every other file of the data directory (keys, key endorsements, TUF metadata,
 * artifacts, NAR files), then `flotilla-backup-manifest.json` with each file's size, mode and
 * sha256. It runs beside a running coordinator, in its own process: the database is copied with
 * SQLite's online backup API (one consistent snapshot; the coordinator keeps writing meanwhile),
 * and the files are read after that snapshot. Artifacts and NAR files are written in full before
 * the database refers to them and never change afterwards, so everything the snapshot refers to
 * is in the backup. With PostgreSQL the database is not in the file: it is dumped with pg_dump
 * (see the README), and `flotilla coordinator verify` checks that the two belong together.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, mkdir, open, readdir, rename, rm, rmdir, stat } from "node:fs/promises";
import { basename, dirname, join, resolve, sep } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import SQLite from "better-sqlite3";
import { keyPin, loadIdentity, type Identity } from "@flotilla/protocol";
import { archiveEnd, ArchiveError, entryHeader, entryPadding, readArchive, type EntryHeader } from "./tar.ts";
import { redeliverWaitingReleases } from "./redeliver.ts";
import { DATABASE_FILE, verified, verifySqlite, type VerifyReport } from "./verify.ts";

const FORMAT = "flotilla-backup";
const VERSION = 1;
const HEADER = "flotilla-backup.json";
const MANIFEST = "flotilla-backup-manifest.json";
const KEY_FILE = "coordinator.key";

interface BackupHeader {
  format: typeof FORMAT;
  version: number;
  createdAt: string;
  coordinator: string;
  pin: string;
  database: "sqlite" | "postgresql";
}

type Manifest = Record<string, { size: number; mode: number; sha256: string }>;

export interface BackupResult {
  file: string;
  header: BackupHeader;
  files: number;
  bytes: number;
}

export interface RestoreResult {
  dataDir: string;
  header: BackupHeader;
  files: number;
  bytes: number;
  verify?: VerifyReport;
  /** Devices a rollout waited on at the backup, whose release is told to them again. */
  redelivered: number;
}

/** Files of a data directory that are not copied: the live database (a snapshot stands in) and unfinished writes. */
function skipped(rel: string, sqlite: boolean): boolean {
  if (sqlite && /^flotilla\.db(-wal|-shm|-journal)?$/.test(rel)) return true;
  // Unfinished uploads (their clients start them again) and atomic writes under way.
  return rel === "artifacts/uploads" || rel === "nix/tmp" || /\.[0-9a-f]{8}\.tmp$/.test(rel);
}

async function coordinatorKey(dataDir: string): Promise<Identity> {
  return loadIdentity(join(dataDir, KEY_FILE)).catch((err: NodeJS.ErrnoException) => {
    throw err.code === "ENOENT" ? new Error(`no coordinator key in ${dataDir}: is it a coordinator's data directory?`) : err;
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The data directory's files and folders below `rel`, parents before children, in name order. */
async function walk(dataDir: string, rel: string, sqlite: boolean, out: { rel: string; dir: boolean }[]): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(join(dataDir, rel))).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const name of names) {
    const child = rel ? `${rel}/${name}` : name;
    if (skipped(child, sqlite)) continue;
    const s = await stat(join(dataDir, child)).catch(() => undefined);
    if (s?.isDirectory()) {
      out.push({ rel: child, dir: true });
      await walk(dataDir, child, sqlite, out);
    } else if (s?.isFile()) {
      out.push({ rel: child, dir: false });
    }
  }
}

/**
 * Writes a backup of `dataDir` to `to` (which must not exist yet): written under a temporary
 * name beside it and renamed into place once complete, so `to` is a whole backup or nothing.
 */
export async function backupCoordinator(opts: { dataDir: string; to: string; databaseUrl?: string; now?: number }): Promise<BackupResult> {
  const identity = await coordinatorKey(opts.dataDir);
  const sqlite = !opts.databaseUrl;
  if (resolve(opts.to).startsWith(resolve(opts.dataDir) + sep)) throw new Error(`${opts.to} is inside the data directory: write the backup elsewhere`);
  if (await exists(opts.to)) throw new Error(`${opts.to} exists already: give a new file name`);
  if (!(await exists(dirname(resolve(opts.to))))) throw new Error(`the folder of ${opts.to} does not exist`);
  const source = join(opts.dataDir, DATABASE_FILE);
  if (sqlite && !(await exists(source))) throw new Error(`no database ${source}: is the coordinator using PostgreSQL (--database-url)?`);

  const temp = `${resolve(opts.to)}.${randomBytes(4).toString("hex")}`;
  const snapshot = `${temp}.db`;
  const partial = `${temp}.part`;
  try {
    if (sqlite) {
      // One step for all pages: a write by the coordinator between steps would restart the copy.
      const db = new SQLite(source, { readonly: true, fileMustExist: true });
      try {
        await db.backup(snapshot, { progress: () => 0x7fffffff });
      } finally {
        db.close();
      }
      await chmod(snapshot, 0o600);
    }
    // The files are read after the snapshot: whatever it refers to is on disk by now.
    const entries: { rel: string; dir: boolean }[] = [];
    await walk(opts.dataDir, "", sqlite, entries);

    const header: BackupHeader = {
      format: FORMAT,
      version: VERSION,
      createdAt: new Date(opts.now ?? Date.now()).toISOString(),
      coordinator: identity.id,
      pin: keyPin(identity.publicKey),
      database: sqlite ? "sqlite" : "postgresql",
    };
    const manifest: Manifest = {};
    let bytes = 0;
    async function* fileEntry(rel: string, path: string): AsyncGenerator<Buffer> {
      const fh = await open(path, "r").catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return undefined; // gone since the listing (an unfinished write)
        throw err;
      });
      if (!fh) return;
      try {
        const s = await fh.stat();
        const mode = s.mode & 0o777;
        yield entryHeader({ path: rel, type: "file", mode, size: s.size, mtimeMs: s.mtimeMs });
        const hash = createHash("sha256");
        let read = 0;
        if (s.size > 0) {
          for await (const chunk of fh.createReadStream({ start: 0, end: s.size - 1, autoClose: false }) as AsyncIterable<Buffer>) {
            hash.update(chunk);
            read += chunk.length;
            yield chunk;
          }
        }
        if (read !== s.size) throw new Error(`${path} shrank while it was copied`);
        yield entryPadding(s.size);
        manifest[rel] = { size: s.size, mode, sha256: hash.digest("hex") };
        bytes += s.size;
      } finally {
        await fh.close();
      }
    }
    async function* archive(): AsyncGenerator<Buffer> {
      const head = Buffer.from(JSON.stringify(header, null, 2) + "\n");
      yield entryHeader({ path: HEADER, type: "file", mode: 0o600, size: head.length, mtimeMs: Date.now() });
      yield head;
      yield entryPadding(head.length);
      if (sqlite) yield* fileEntry(DATABASE_FILE, snapshot);
      for (const e of entries) {
        const path = join(opts.dataDir, e.rel);
        if (!e.dir) {
          yield* fileEntry(e.rel, path);
          continue;
        }
        const s = await stat(path).catch(() => undefined);
        if (s) yield entryHeader({ path: e.rel, type: "dir", mode: s.mode & 0o777, size: 0, mtimeMs: s.mtimeMs });
      }
      const list = Buffer.from(JSON.stringify(manifest, null, 2) + "\n");
      yield entryHeader({ path: MANIFEST, type: "file", mode: 0o600, size: list.length, mtimeMs: Date.now() });
      yield list;
      yield entryPadding(list.length);
      yield archiveEnd();
    }
    // Opened first, so a failure cannot create the file after the cleanup below has run.
    const fh = await open(partial, "w", 0o600);
    try {
      await pipeline(Readable.from(archive()), createGzip(), fh.createWriteStream());
    } finally {
      await fh.close().catch(() => undefined);
    }
    const written = await open(partial, "r+");
    await written.sync().finally(() => written.close());
    await rename(partial, opts.to);
    return { file: opts.to, header, files: Object.keys(manifest).length, bytes };
  } finally {
    await rm(snapshot, { force: true });
    await rm(partial, { force: true });
  }
}

/** A path from the archive as a safe relative path inside the data directory, or an ArchiveError. */
function safePath(path: string): string {
  const parts = path.split("/");
  if (!path || path.startsWith("/") || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new ArchiveError(`it holds an entry outside the data directory (${JSON.stringify(path)})`);
  }
  return path;
}

async function isEmptyDir(path: string): Promise<boolean | undefined> {
  let s;
  try {
    s = await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  if (!s.isDirectory()) return false;
  return (await readdir(path)).length === 0;
}

/**
 * Restores the backup `file` into `dataDir`, which must not exist or be empty. Everything is
 * written into a new folder beside it, checked against the manifest (sizes, modes, sha256), the
 * database checked (SQLite's integrity check; every artifact and NAR file it refers to present),
 * and only then renamed into place: a damaged or truncated backup leaves nothing behind. The
 * devices a rollout was waiting on are told their release again (see redeliver.ts).
 */
export async function restoreCoordinator(opts: { file: string; dataDir: string }): Promise<RestoreResult> {
  const target = resolve(opts.dataDir);
  const empty = await isEmptyDir(target);
  if (empty === false) throw new Error(`${opts.dataDir} is not empty: restore into a new or empty folder`);
  if (!(await exists(opts.file))) throw new Error(`no file ${opts.file}`);
  await mkdir(dirname(target), { recursive: true, mode: 0o700 });
  const temp = join(dirname(target), `.${basename(target)}.restore-${randomBytes(4).toString("hex")}`);
  await mkdir(temp, { mode: 0o700 });
  try {
    let header: BackupHeader | undefined;
    let manifest: Manifest | undefined;
    const written: Manifest = {};
    let bytes = 0;
    const small = async (content: AsyncGenerator<Buffer>, size: number, what: string): Promise<unknown> => {
      if (size > 1024 * 1024 * 1024) throw new ArchiveError(`its ${what} is implausibly large (damaged)`);
      const parts: Buffer[] = [];
      for await (const b of content) parts.push(b);
      try {
        return JSON.parse(Buffer.concat(parts).toString("utf8"));
      } catch {
        throw new ArchiveError(`its ${what} is not JSON (damaged)`);
      }
    };
    await pipeline(createReadStream(opts.file), createGunzip(), async (source: AsyncIterable<Buffer>) => {
      await readArchive(Readable.from(source), async (e: EntryHeader, content) => {
        if (!header) {
          if (e.path !== HEADER || e.type !== "file") throw new ArchiveError("it is not a flotilla backup");
          header = (await small(content, e.size, "description")) as BackupHeader;
          if (header?.format !== FORMAT) throw new ArchiveError("it is not a flotilla backup");
          if (header.version > VERSION) throw new ArchiveError(`it is of a newer format (${header.version}) than this flotilla reads (${VERSION})`);
          return;
        }
        if (manifest) throw new ArchiveError("it has entries after its manifest (damaged)");
        if (e.path === MANIFEST) {
          manifest = (await small(content, e.size, "manifest")) as Manifest;
          return;
        }
        const rel = safePath(e.path);
        const path = join(temp, rel);
        if (e.type === "dir") {
          await mkdir(path, { recursive: true, mode: 0o700 });
          await chmod(path, (e.mode & 0o777) | 0o700);
          return;
        }
        await mkdir(dirname(path), { recursive: true, mode: 0o700 });
        const mode = e.mode & 0o777;
        const hash = createHash("sha256");
        const fh = await open(path, "wx", mode);
        try {
          for await (const piece of content) {
            hash.update(piece);
            await fh.write(piece);
          }
          await fh.sync();
        } finally {
          await fh.close();
        }
        await chmod(path, mode);
        written[rel] = { size: e.size, mode, sha256: hash.digest("hex") };
        bytes += e.size;
      });
    }).catch((err: unknown) => {
      if (err instanceof ArchiveError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      if (typeof code === "string" && code.startsWith("Z_")) throw new ArchiveError(`it is damaged or truncated (${(err as Error).message})`);
      throw err;
    });
    if (!header) throw new ArchiveError("it is empty");
    if (!manifest) throw new ArchiveError("it has no manifest (truncated)");
    for (const [rel, want] of Object.entries(manifest)) {
      const got = written[rel];
      if (!got) throw new ArchiveError(`${rel} is missing from it (damaged)`);
      if (got.size !== want.size || got.sha256 !== want.sha256) throw new ArchiveError(`${rel} does not match its checksum (damaged)`);
    }
    const extra = Object.keys(written).find((rel) => !manifest![rel]);
    if (extra) throw new ArchiveError(`${extra} is not in its manifest (damaged)`);

    const identity = await coordinatorKey(temp);
    if (identity.id !== header.coordinator) throw new ArchiveError("its coordinator key is not the one it describes (damaged)");
    let verify: VerifyReport | undefined;
    let redelivered = 0;
    if (header.database === "sqlite") {
      verify = await verifySqlite(temp);
      if (!verified(verify)) {
        throw new Error(
          verify.integrity !== "ok" ? `its database fails SQLite's integrity check: ${verify.integrity}` : `its database refers to files it lacks: ${verify.missing.join(", ")}`,
        );
      }
      redelivered = redeliverWaitingReleases(join(temp, DATABASE_FILE), Date.now());
    }
    if (empty) await rmdir(target);
    await rename(temp, target);
    await chmod(target, 0o700);
    return { dataDir: opts.dataDir, header, files: Object.keys(written).length, bytes, verify, redelivered };
  } catch (err) {
    await rm(temp, { recursive: true, force: true });
    throw err;
  }
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}

/** Lines for people about a backup just written. */
export function describeBackup(r: BackupResult): string {
  const lines = [`backup of coordinator ${r.header.coordinator} written to ${r.file}: ${r.files} files, ${size(r.bytes)}`];
  if (r.header.database === "postgresql") {
    lines.push("it holds the data directory only: back up the PostgreSQL database with pg_dump as well (see the README, \"Backup and restore\")");
  } else {
    lines.push("the database is a consistent snapshot taken at the start; every artifact and NAR file it refers to is in the backup");
  }
  return lines.join("\n");
}

/** Lines for people about a restore just done. */
export function describeRestore(r: RestoreResult): string {
  const lines = [
    `restored the backup of coordinator ${r.header.coordinator} taken ${r.header.createdAt} into ${r.dataDir}: ${r.files} files, ${size(r.bytes)}`,
  ];
  if (r.verify) {
    lines.push(`database integrity ok; all ${r.verify.artifacts} release artifact(s) and ${r.verify.nars} NAR file(s) it refers to are present`);
    if (r.redelivered > 0) {
      lines.push(`${r.redelivered} device(s) a rollout was waiting on are told their release again, so they report where they are now`);
    }
  } else {
    lines.push(
      `the backup holds no database (the coordinator used PostgreSQL): restore it with pg_restore, then check with \`flotilla coordinator verify --data-dir ${r.dataDir} --database-url URL\``,
    );
  }
  return lines.join("\n");
}
