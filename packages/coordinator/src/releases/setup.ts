import { join } from "node:path";
import { ArtifactStore } from "../artifacts/artifact-store.ts";
import type { ServiceContext } from "../context.ts";
import { TufRepository } from "../tuf/repository.ts";

const SNAPSHOT_TTL_MS = 7 * 86_400_000;

/**
 * The coordinator's release machinery: the artifact store and the TUF repositories in the data
 * directory, and the timer that keeps snapshot and timestamp from expiring.
 */
export async function startReleases(
  ctx: ServiceContext,
  opts: { dataDir: string; tufTimestampTtlMs?: number; tufRefreshMs?: number },
): Promise<{ artifacts: ArtifactStore; tuf: TufRepository; close(): void }> {
  const timestampTtlMs = opts.tufTimestampTtlMs ?? 86_400_000;
  const refreshMs = opts.tufRefreshMs ?? 3_600_000;
  const artifacts = new ArtifactStore(join(opts.dataDir, "artifacts"));
  const tuf = new TufRepository(join(opts.dataDir, "tuf"), ctx.onlineIdentity, {
    timestampTtlMs,
    snapshotTtlMs: Math.max(SNAPSHOT_TTL_MS, timestampTtlMs),
    refreshMs,
  });
  const refresh = () =>
    tuf.refreshAll().catch((err: unknown) => ctx.log.warn("could not refresh TUF metadata", { err: String(err) }));
  await refresh();
  const timer = setInterval(() => void refresh(), refreshMs);
  timer.unref();
  return { artifacts, tuf, close: () => clearInterval(timer) };
}
