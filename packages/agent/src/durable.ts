import { randomBytes } from "node:crypto";
import { open, readdir, readlink, rename, rm, symlink, lstat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** fsyncs a directory, so renames and unlinks inside it survive a power cut, not only a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `data` to a temporary file beside `path` (or `opts.tmp`), fsyncs it, renames it over
 * `path` and fsyncs the directory (with `opts.syncDir` when the caller holds the directory
 * open): after any crash the file is wholly old or wholly new. Costs two fsyncs. On failure the
 * temporary file is removed.
 */
export async function writeFileDurable(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number; tmp?: string; syncDir?: () => Promise<void> } = {},
): Promise<void> {
  const tmp = opts.tmp ?? join(dirname(path), `.${basename(path)}.${randomBytes(4).toString("hex")}.tmp`);
  try {
    const fh = await open(tmp, "w", opts.mode ?? 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await (opts.syncDir ? opts.syncDir() : fsyncDir(dirname(path)));
}

/** Removes a file or tree, then fsyncs its directory. */
export async function removeDurable(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
  await fsyncDir(dirname(path));
}

/**
 * Points the symlink `link` at `target` atomically: a new symlink under a temporary name is
 * renamed over the old one, so a reader (or a crash) sees the old target or the new one, never
 * no link.
 */
export async function swapSymlink(link: string, target: string): Promise<void> {
  const tmp = join(dirname(link), `.${basename(link)}.${randomBytes(4).toString("hex")}.tmp`);
  await symlink(target, tmp);
  await rename(tmp, link);
  await fsyncDir(dirname(link));
}

/** The target of a symlink, or undefined when there is none. */
export async function readLinkIfExists(link: string): Promise<string | undefined> {
  try {
    return await readlink(link);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EINVAL") return undefined;
    throw err;
  }
}

/**
 * fsyncs every regular file and directory under `root` (symlinks are not followed), so an
 * unpacked release is on disk before it is renamed into place. Costs one fsync per entry.
 */
export async function fsyncTree(root: string): Promise<void> {
  for (const entry of await readdir(root, { withFileTypes: true })) {
    const p = join(root, entry.name);
    if (entry.isDirectory()) await fsyncTree(p);
    else if (entry.isFile()) {
      let fh;
      try {
        fh = await open(p, "r");
      } catch (err) {
        // A file the archive made unreadable to us cannot be fsynced; it is still there.
        if ((err as NodeJS.ErrnoException).code === "EACCES") continue;
        throw err;
      }
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  }
  await fsyncDir(root);
}

/** Whether anything (a file, a directory, a dangling symlink) exists at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
