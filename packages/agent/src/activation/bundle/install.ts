import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { exists, fsyncDir, fsyncTree, removeDurable } from "../../durable.ts";
import type { NameLayout, ReleaseRecord } from "./layout.ts";
import { installSingleFile, unpackTarball, type UnpackLimits } from "./unpack.ts";

/**
 * Puts a release under its final name `releases/<id>/`: unpacked (or copied, for a single file)
 * into a temporary directory, fsynced, its record written, then renamed into place, so a crash
 * never leaves a half release under its final name. A release already there whole (same id and
 * sha256, e.g. going back to an older one) is reused. Throws (BundleRefusedError for a bad
 * bundle) after removing what it wrote.
 */
export async function installRelease(layout: NameLayout, rec: ReleaseRecord, artifactPath: string, limits: UnpackLimits): Promise<void> {
  const final = layout.releaseDir(rec.id);
  if ((await exists(final)) && (await layout.readRecord(rec.id).catch(() => undefined))?.sha256 === rec.sha256) return;
  await removeDurable(final);
  const tmp = join(layout.releasesDir, `.tmp-${rec.id}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp, { mode: 0o755 });
  try {
    if (rec.meta.singleFile) await installSingleFile(artifactPath, tmp, rec.meta.name);
    else await unpackTarball(artifactPath, tmp, limits);
    await fsyncTree(tmp);
    await layout.writeRecord(rec);
    await rename(tmp, final);
    await fsyncDir(layout.releasesDir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Removes every release (and leftover) under `releases/` except `keep`. */
export async function prune(layout: NameLayout, keep: (string | undefined)[]): Promise<void> {
  const strays = await layout.strays(keep);
  for (const s of strays) await rm(s, { recursive: true, force: true });
  if (strays.length > 0) await fsyncDir(layout.releasesDir);
}

/** Removes temporary symlinks and files a crash left in the name directory. */
export async function removeTempFiles(layout: NameLayout): Promise<void> {
  for (const e of await readdir(layout.dir)) {
    if (/^\..*\.tmp$/.test(e)) await rm(join(layout.dir, e), { force: true });
  }
}
