import { mkdir, readdir } from "node:fs/promises";
import { basename, join } from "node:path";
import { readJsonIfExists, RELEASE_NAME, type ReleaseMeta } from "@flotilla/protocol/agent";
import type { InstalledRelease } from "../activator.ts";
import { readLinkIfExists, writeFileDurable } from "../../durable.ts";

/** An installed (unpacked) release: what `releases/<id>.json` records beside its directory. */
export interface ReleaseRecord {
  /** `<counter>-<first 12 hex of sha256>`: the directory name under `releases/`. */
  id: string;
  meta: ReleaseMeta;
  sha256: string;
}

/** A release's directory name: its counter and the first 12 hex digits of its sha256. */
export function releaseId(meta: Pick<ReleaseMeta, "counter">, sha256: string): string {
  return `${meta.counter}-${sha256.slice(0, 12)}`;
}

/** What the Activator interface reports of an installed release. */
export function installedOf(r: ReleaseRecord): InstalledRelease {
  return { name: r.meta.name, version: r.meta.version, counter: r.meta.counter, sha256: r.sha256 };
}

const ID_RE = /^\d{1,16}-[0-9a-f]{12}$/;

/**
 * The files of one release name under the activator's directory:
 *
 * ```
 * <root>/<name>/releases/<id>/        an unpacked release (renamed into place whole)
 * <root>/<name>/releases/<id>.json    its ReleaseRecord
 * <root>/<name>/current -> releases/<id>
 * <root>/<name>/previous -> releases/<id>
 * <root>/<name>/journal.json          the activation in progress, if any
 * <root>/<name>/pid.json              the supervised process group, while one runs
 * <root>/<name>/stopped               present while an admin has the release stopped
 * <root>/<name>/data/                 the release's own data (FLOTILLA_DATA_DIR), kept across
 *                                     versions and by an undeploy without --purge
 * ```
 */
export class NameLayout {
  readonly dir: string;
  constructor(root: string, readonly name: string) {
    if (!RELEASE_NAME.test(name)) throw new Error(`invalid release name ${JSON.stringify(name)}`);
    this.dir = join(root, name);
  }

  get releasesDir(): string {
    return join(this.dir, "releases");
  }
  get currentLink(): string {
    return join(this.dir, "current");
  }
  get previousLink(): string {
    return join(this.dir, "previous");
  }
  get journalPath(): string {
    return join(this.dir, "journal.json");
  }
  get pidPath(): string {
    return join(this.dir, "pid.json");
  }
  get stoppedPath(): string {
    return join(this.dir, "stopped");
  }
  get dataDir(): string {
    return join(this.dir, "data");
  }
  releaseDir(id: string): string {
    return join(this.releasesDir, id);
  }
  /** What the `current`/`previous` symlinks hold for a release: a path relative to the name dir. */
  linkTarget(id: string): string {
    return join("releases", id);
  }

  async ensure(): Promise<void> {
    await mkdir(this.releasesDir, { recursive: true, mode: 0o755 });
  }

  /** The release id a symlink points at, or undefined (no link, or not one of ours). */
  async linkedId(link: string): Promise<string | undefined> {
    const target = await readLinkIfExists(link);
    if (target === undefined) return undefined;
    const id = basename(target);
    return ID_RE.test(id) ? id : undefined;
  }

  currentId(): Promise<string | undefined> {
    return this.linkedId(this.currentLink);
  }
  previousId(): Promise<string | undefined> {
    return this.linkedId(this.previousLink);
  }

  readRecord(id: string): Promise<ReleaseRecord | undefined> {
    return readJsonIfExists<ReleaseRecord>(join(this.releasesDir, `${id}.json`));
  }
  writeRecord(r: ReleaseRecord): Promise<void> {
    return writeFileDurable(join(this.releasesDir, `${r.id}.json`), JSON.stringify(r, null, 2) + "\n", { mode: 0o644 });
  }

  /** Everything in `releases/` that is neither `keep` nor its record: old releases and leftovers. */
  async strays(keep: (string | undefined)[]): Promise<string[]> {
    const kept = new Set(keep.filter((k): k is string => k !== undefined).flatMap((k) => [k, `${k}.json`]));
    let entries: string[];
    try {
      entries = await readdir(this.releasesDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    return entries.filter((e) => !kept.has(e)).map((e) => join(this.releasesDir, e));
  }
}

/** Release names that have a directory under `root`. */
export async function listNames(root: string): Promise<string[]> {
  try {
    return (await readdir(root, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && RELEASE_NAME.test(e.name))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}
