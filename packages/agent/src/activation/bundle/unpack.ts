import { createReadStream } from "node:fs";
import { chmod, copyFile, lstat, mkdir, readdir, realpath } from "node:fs/promises";
import { join, posix, sep } from "node:path";
import type * as Tar from "tar";

/** Limits on what a bundle may unpack to. */
export interface UnpackLimits {
  /** Sum of the sizes of every file in the archive. */
  maxBytes: number;
  /** Number of entries in the archive. */
  maxEntries: number;
}

export const defaultUnpackLimits: UnpackLimits = { maxBytes: 2 * 1024 ** 3, maxEntries: 100_000 };

/** A bundle that may not be installed: nothing of it is switched to. */
export class BundleRefusedError extends Error {
  override name = "BundleRefusedError";
}

/** Errors of the machine, not of the bundle: they propagate as they are. */
const HOST_ERRORS = new Set(["ENOSPC", "EDQUOT", "EIO", "EMFILE", "ENFILE", "ENOMEM", "EROFS"]);

const ALLOWED_TYPES = new Set(["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink", "Link"]);

/** The archive path normalized; throws when it is absolute or climbs out with `..`. */
function safeRelative(path: string, what: string): string {
  if (path.includes("\0")) throw new BundleRefusedError(`${what} contains a NUL byte`);
  if (posix.isAbsolute(path) || /^[a-zA-Z]:/.test(path)) throw new BundleRefusedError(`${what} is absolute: ${path}`);
  const norm = posix.normalize(path);
  if (norm === ".." || norm.startsWith("../")) throw new BundleRefusedError(`${what} escapes the release directory: ${path}`);
  return norm.replace(/\/+$/, "");
}

/**
 * Whether a link's path and its raw target lie one inside the other as node-tar 7 compares them
 * (normalized, case- and Unicode-folded, target taken from the archive root). Its extractor
 * reserves both paths for the entry and then waits for itself forever (`c -> c/a`, `c/a -> c`).
 */
function nestedForTar(path: string, linkpath: string): boolean {
  const fold = (p: string) => posix.normalize(p.normalize("NFD").toLocaleLowerCase("en").toLocaleUpperCase("en")).replace(/\/+$/, "");
  const a = fold(path);
  const b = fold(linkpath);
  return a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
}

function underAny(path: string, dirs: Set<string>): string | undefined {
  const parts = path.split("/");
  for (let i = 1; i < parts.length; i++) {
    const prefix = parts.slice(0, i).join("/");
    if (dirs.has(prefix)) return prefix;
  }
  return undefined;
}

/** tar, loaded at the first bundle: an agent that installs none does not hold it. */
const loadTar = () => import("tar");

/**
 * Calls `onEntry` for each entry of the archive without writing anything; stops reading at once
 * when it throws (a refused entry early in a huge archive costs nothing more) and rejects with
 * that error.
 */
async function listEntries(file: string, onEntry: (e: Tar.ReadEntry) => void): Promise<void> {
  const tar = await loadTar();
  return new Promise<void>((resolve, reject) => {
    const input = createReadStream(file);
    const parser: Tar.Parser = new tar.Parser({
      strict: true,
      onReadEntry: (e) => {
        try {
          onEntry(e);
        } catch (err) {
          input.destroy();
          parser.abort(err as Error);
          return;
        }
        e.resume();
      },
    });
    parser.on("error", reject);
    parser.on("end", () => resolve());
    input.on("error", reject);
    input.pipe(parser);
  });
}

/**
 * Reads the archive's headers without writing anything and refuses it when an entry is not a
 * plain file, directory or link; has an absolute path or `..` escaping the root; is a symlink
 * whose target is absolute or lexically outside; is a hard link to outside; is written through
 * a symlink the archive itself created; or when the totals exceed `limits`.
 */
async function inspect(file: string, limits: UnpackLimits): Promise<void> {
  let bytes = 0;
  let entries = 0;
  const symlinks = new Set<string>();
  const check = (e: Tar.ReadEntry): void => {
    entries++;
    if (entries > limits.maxEntries) throw new BundleRefusedError(`bundle has more than ${limits.maxEntries} entries`);
    if (!ALLOWED_TYPES.has(e.type)) throw new BundleRefusedError(`bundle entry ${e.path} is a ${e.type}, not a file, directory or link`);
    const path = safeRelative(e.path, `bundle entry ${e.path}`);
    const through = underAny(path, symlinks);
    if (through !== undefined) throw new BundleRefusedError(`bundle entry ${e.path} is written through the symlink ${through}`);
    bytes += e.size;
    if (bytes > limits.maxBytes) throw new BundleRefusedError(`bundle unpacks to more than ${limits.maxBytes} bytes`);
    if ((e.type === "SymbolicLink" || e.type === "Link") && nestedForTar(path, e.linkpath ?? "")) {
      throw new BundleRefusedError(`link ${e.path} -> ${e.linkpath} lies inside itself`);
    }
    if (e.type === "SymbolicLink") {
      const target = e.linkpath ?? "";
      if (posix.isAbsolute(target)) throw new BundleRefusedError(`symlink ${e.path} points at an absolute path: ${target}`);
      safeRelative(posix.join(posix.dirname(path), target), `symlink ${e.path} -> ${target}`);
      symlinks.add(path);
    } else if (e.type === "Link") {
      const target = safeRelative(e.linkpath ?? "", `hard link ${e.path} -> ${e.linkpath}`);
      if (target === "." || target === "") throw new BundleRefusedError(`hard link ${e.path} has no target`);
      const via = underAny(target, symlinks) ?? (symlinks.has(target) ? target : undefined);
      if (via !== undefined) throw new BundleRefusedError(`hard link ${e.path} goes through the symlink ${via}`);
    }
  };
  await listEntries(file, check);
  if (entries === 0) throw new BundleRefusedError("bundle is empty");
}

/**
 * After extraction: every symlink that resolves must resolve inside `root` (this catches chains
 * of links that each look harmless), and setuid/setgid/sticky bits are dropped.
 */
async function verifyTree(root: string, dir = root): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isSymbolicLink()) {
      let resolved: string;
      try {
        resolved = await realpath(p);
      } catch {
        continue; // dangling, and lexically inside (checked before extraction)
      }
      if (resolved !== root && !resolved.startsWith(root + sep)) {
        throw new BundleRefusedError(`symlink ${p.slice(root.length + 1)} resolves outside the release directory`);
      }
    } else {
      const mode = (await lstat(p)).mode;
      if (mode & 0o7000) await chmod(p, mode & 0o777);
      if (entry.isDirectory()) await verifyTree(root, p);
    }
  }
}

/**
 * Unpacks a `.tar`, `.tar.gz` or `.tgz` bundle (the format is detected from the content) into
 * the existing empty directory `dest`, refusing anything that could write outside it (see
 * `inspect`). Owners are not preserved; setuid/setgid/sticky bits are dropped. Throws
 * BundleRefusedError for a bad bundle; `dest` then holds partial content the caller discards.
 */
export async function unpackTarball(file: string, dest: string, limits: UnpackLimits = defaultUnpackLimits): Promise<void> {
  try {
    await inspect(file, limits);
  } catch (err) {
    if (err instanceof BundleRefusedError) throw err;
    throw new BundleRefusedError(`bundle is not a readable tar archive: ${(err as Error).message}`);
  }
  const root = await realpath(dest);
  const tar = await loadTar();
  let bytes = 0;
  let tooBig = false;
  try {
    await tar.x({
      file,
      cwd: root,
      strict: true,
      preserveOwner: false,
      filter: (_path, entry) => {
        // The archive was inspected already; this guards against it changing under us.
        bytes += "size" in entry ? entry.size : 0;
        if (bytes > limits.maxBytes) tooBig = true;
        return !tooBig;
      },
    });
  } catch (err) {
    // Entries that clash (a file over a directory with content, "b/." after "b/a") fail in the
    // file system; that is the bundle's fault. A full or failing disk is not.
    if (HOST_ERRORS.has((err as NodeJS.ErrnoException).code ?? "")) throw err;
    throw new BundleRefusedError(`bundle cannot be unpacked: ${(err as Error).message}`);
  }
  if (tooBig) throw new BundleRefusedError(`bundle unpacks to more than ${limits.maxBytes} bytes`);
  await verifyTree(root);
}

/** Installs a single-file release as `<dest>/<name>`, mode 0755. */
export async function installSingleFile(file: string, dest: string, name: string): Promise<void> {
  await mkdir(dest, { recursive: true });
  const target = join(dest, name);
  await copyFile(file, target);
  await chmod(target, 0o755);
  if (!(await lstat(target)).isFile()) throw new BundleRefusedError("single-file release is not a regular file");
}
