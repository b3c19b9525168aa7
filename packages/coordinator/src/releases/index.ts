import { join } from "node:path";
import { adminv1 } from "@flotilla/protocol";
import { ArtifactStore } from "../artifacts/artifact-store.ts";
import { startSweeper, StorageQuotas, sweepIntervalMs } from "../artifacts/storage-quota.ts";
import type { CoordinatorConfig } from "../config.ts";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { GarbageCollector, startGarbageCollection } from "../gc/garbage.ts";
import { NarFiles } from "../nixcache/nar-files.ts";
import { startPeriodic } from "../server/periodic.ts";
import { TufRepository } from "../tuf/repository.ts";
import { releasesHttpHandler } from "./http.ts";
import { releaseService } from "./release-service.ts";

const SNAPSHOT_TTL_MS = 7 * 86_400_000;

/**
 * Releases as a coordinator feature: the ReleaseService, artifact uploads and TUF downloads over
 * plain HTTP, the artifact store (within each organization's storage quota) and TUF repositories
 * in the data directory, the timer that keeps snapshot and timestamp from expiring, and the sweep
 * of abandoned uploads (each run once before this resolves), and garbage collection on a
 * schedule (gc/garbage.ts).
 */
export async function releasesFeature(
  ctx: ServiceContext,
  config: Pick<CoordinatorConfig, "dataDir" | "tufTimestampTtlMs" | "tufRefreshMs" | "storageQuota" | "storageQuotaOrgs" | "staleUploadAfterMs" | "gcIntervalMs" | "gcGraceMs">,
): Promise<Feature> {
  const artifacts = new ArtifactStore(join(config.dataDir, "artifacts"), new StorageQuotas(ctx.store, config));
  const tuf = new TufRepository(join(config.dataDir, "tuf"), ctx.onlineIdentity, {
    timestampTtlMs: config.tufTimestampTtlMs,
    snapshotTtlMs: Math.max(SNAPSHOT_TTL_MS, config.tufTimestampTtlMs),
    refreshMs: config.tufRefreshMs,
  });
  // Once across replicas (server/lease.ts): they share the data directory the metadata is in.
  const refresher = await startPeriodic(() => tuf.refreshAll(), config.tufRefreshMs, ctx.log, "could not refresh TUF metadata", {
    runNow: true,
    lease: { leases: ctx.leases, name: "tuf-refresh" },
  });
  const sweeper = await startSweeper("artifact uploads", () => artifacts.sweep(config.staleUploadAfterMs), sweepIntervalMs(config.staleUploadAfterMs), ctx.log, {
    leases: ctx.leases,
    name: "artifact-upload-sweep",
  });
  // The Nix cache's NARs (nixcache/index.ts) are collected here too: releases decide what they need.
  const gc = new GarbageCollector(ctx.store, artifacts, new NarFiles(join(config.dataDir, "nix")), { graceMs: config.gcGraceMs, log: ctx.log });
  const collector = await startGarbageCollection(gc, config.gcIntervalMs, ctx.log, { leases: ctx.leases, name: "gc" });
  return {
    name: "releases",
    routes(router) {
      router.service(adminv1.ReleaseService, releaseService(ctx, tuf, artifacts, gc));
    },
    http: releasesHttpHandler({ store: ctx.store, artifacts, tuf, log: ctx.log, auditor: ctx.auditor }),
    serviceNames: [adminv1.ReleaseService.typeName],
    async close() {
      await refresher.close();
      await collector.close();
      await sweeper.close();
    },
  };
}
