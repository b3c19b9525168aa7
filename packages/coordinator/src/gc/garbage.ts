/**
 * Garbage collection of stored artifacts and NARs: what no release needs any more.
 *
 * An organization needs an artifact while one of its releases names it. Devices' current,
 * desired and rollback releases are releases, so they count as long as their rows exist, which
 * `release rm` sees to (it refuses while devices need the release, unless forced). It needs a
 * store path of its Nix cache while a NixOS release's artifact lists it (the system path and
 * its closure manifest) or a needed path references it. Everything an organization uploaded
 * that it does not need, and that is older than the grace period (an upload on its way into a
 * release is not garbage), is given up: its row goes and its charge in the storage quota is
 * given back. The file itself, stored once for all organizations, leaves the disk only once no
 * organization has uploaded it or needs it.
 *
 * A narinfo deleted here is gone from the organization's cache: `nix copy` may upload that path
 * again (and a new narinfo for it is accepted, as for any path the cache does not hold).
 */
import { startPeriodic, type Periodic, type PeriodicLease } from "../server/periodic.ts";
import { readFile } from "node:fs/promises";
import { parseNixosArtifact, type Logger } from "@flotilla/protocol";
import type { ArtifactStore } from "../artifacts/artifact-store.ts";
import type { NarFiles } from "../nixcache/nar-files.ts";
import type { Store } from "../store/index.ts";

/** Most artifacts and NARs one organization gives up in one run; the rest waits for the next. */
export const GC_LIMIT = 10_000;

/** What one organization gave up (or, in a dry run, would). */
export interface OrgGarbage {
  orgId: string;
  artifacts: number;
  nars: number;
  storePaths: number;
  /** Bytes of its storage quota given back. */
  bytes: number;
}

export interface GarbageResult {
  orgs: OrgGarbage[];
  /** Files deleted from disk, needed by no organization any more, and their bytes. */
  filesDeleted: number;
  bytesDeleted: number;
  dryRun: boolean;
}

export interface GarbageOptions {
  /** Objects recorded less than this long ago are kept. */
  graceMs: number;
  log?: Logger;
}

export class GarbageCollector {
  constructor(
    private readonly store: Pick<Store, "releases" | "nix" | "storage" | "access">,
    private readonly artifacts: ArtifactStore,
    private readonly nars: NarFiles,
    private readonly opts: GarbageOptions,
  ) {}

  /** Collects the given organizations' garbage (default: every organization's). */
  async collect(opts: { orgIds?: string[]; dryRun?: boolean; now?: number } = {}): Promise<GarbageResult> {
    const orgIds = opts.orgIds ?? (await this.store.access.listOrgs()).map((o) => o.id);
    const result: GarbageResult = { orgs: [], filesDeleted: 0, bytesDeleted: 0, dryRun: opts.dryRun === true };
    for (const orgId of orgIds) await this.collectOrg(orgId, result, opts.now ?? Date.now());
    return result;
  }

  private async collectOrg(orgId: string, result: GarbageResult, now: number): Promise<void> {
    const dry = result.dryRun;
    const before = now - this.opts.graceMs;
    const report: OrgGarbage = { orgId, artifacts: 0, nars: 0, storePaths: 0, bytes: 0 };
    const { releases, nix, storage } = this.store;
    // In a dry run nothing is deleted: a file would leave the disk when no other organization needs it.
    const except = dry ? orgId : undefined;
    const countDeleted = async (size: number | undefined) => {
      if (size === undefined) return;
      result.filesDeleted++;
      result.bytesDeleted += size;
    };

    for (const a of await releases.unreleasedArtifacts(orgId, before, GC_LIMIT)) {
      if (dry) {
        report.artifacts++;
        report.bytes += (await storage.charged(orgId, "artifact", a.sha256)) ? a.length : 0;
      } else {
        if (!(await releases.dropArtifactOwner(orgId, a.sha256))) continue;
        report.artifacts++;
        report.bytes += await storage.uncharge(orgId, "artifact", a.sha256);
      }
      if (!(await releases.artifactNeeded(a.sha256, except))) await countDeleted(dry ? await this.artifacts.size(a.sha256) : await this.artifacts.remove(a.sha256));
    }

    const roots = await this.nixRoots(orgId);
    if (roots) {
      const links = await nix.listPathLinks(orgId);
      const byHash = new Map(links.map((l) => [l.hashPart, l]));
      const needed = new Set<string>();
      const queue = [...roots];
      while (queue.length > 0) {
        const h = queue.pop()!;
        if (needed.has(h)) continue;
        needed.add(h);
        for (const ref of byHash.get(h)?.references ?? []) queue.push(ref.slice(0, 32));
      }
      const unneeded = links.filter((l) => !needed.has(l.hashPart) && l.createdAt < before).slice(0, GC_LIMIT);
      const gone = new Set(unneeded.map((l) => l.hashPart));
      const kept = new Set(links.filter((l) => !gone.has(l.hashPart)).map((l) => l.fileHash));
      if (!dry) await nix.deletePaths(orgId, [...gone]);
      report.storePaths = unneeded.length;
      const files = new Set([...unneeded.map((l) => l.fileHash).filter((f) => !kept.has(f)), ...(await nix.unusedNars(orgId, before, GC_LIMIT))]);
      for (const hex of files) {
        if (dry) {
          report.nars++;
          report.bytes += (await storage.charged(orgId, "nar", hex)) ? ((await this.nars.size(hex)) ?? 0) : 0;
        } else {
          // A NAR uploaded but not yet named by a narinfo is not dropped from under a path added since.
          await nix.dropNar(orgId, hex);
          if (await nix.hasFile(orgId, hex)) continue;
          report.nars++;
          report.bytes += await storage.uncharge(orgId, "nar", hex);
        }
        if (!(await nix.narNeeded(hex, except))) await countDeleted(dry ? await this.nars.size(hex) : await this.nars.remove(hex));
      }
    }
    if (report.artifacts + report.nars + report.storePaths > 0) {
      result.orgs.push(report);
      if (!dry) this.opts.log?.info("garbage collected", { org: orgId, artifacts: report.artifacts, nars: report.nars, storePaths: report.storePaths, bytes: report.bytes });
    }
  }

  /**
   * The hash parts of the store paths the organization's NixOS releases name, or undefined when
   * one of their artifacts cannot be read (then none of its NARs is collected this time).
   */
  private async nixRoots(orgId: string): Promise<string[] | undefined> {
    const roots: string[] = [];
    for (const r of await this.store.releases.listReleases(orgId)) {
      if (r.kind !== "nixos") continue;
      try {
        const artifact = parseNixosArtifact(await readFile(this.artifacts.path(r.sha256), "utf8"));
        for (const p of [artifact.storePath, ...(artifact.closure ?? []).map((e) => e.path)]) roots.push(p.slice("/nix/store/".length, "/nix/store/".length + 32));
      } catch (err) {
        this.opts.log?.warn("not collecting Nix paths: a NixOS release's artifact is unreadable", { org: orgId, release: r.targetPath, err: String(err) });
        return undefined;
      }
    }
    return roots;
  }
}

/** Runs `collect` every `intervalMs` while none is under way; errors are logged. */
export function startGarbageCollection(gc: GarbageCollector, intervalMs: number, log: Logger, lease?: PeriodicLease): Promise<Periodic> {
  const task = async () => {
    const r = await gc.collect();
    if (r.orgs.length > 0) log.info("garbage collection done", { orgs: r.orgs.length, files: r.filesDeleted, bytes: r.bytesDeleted });
  };
  return startPeriodic(task, intervalMs, log, "garbage collection failed", lease ? { lease } : {});
}
