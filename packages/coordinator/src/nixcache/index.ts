import { join } from "node:path";
import { adminv1 } from "@flotilla/protocol";
import { startSweeper, StorageQuotas, sweepIntervalMs } from "../artifacts/storage-quota.ts";
import type { CoordinatorConfig } from "../config.ts";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { nixCacheHandler } from "./http-cache.ts";
import { NarFiles } from "./nar-files.ts";
import { nixService } from "./nix-service.ts";

/**
 * The Nix binary cache as a coordinator feature: the NixService (an organization's signing
 * keys) and the cache itself over plain HTTP at /nix/<organization>/, its NARs in `<dataDir>/nix`
 * (within each organization's storage quota), and the sweep of abandoned uploads.
 */
export async function nixCacheFeature(
  ctx: ServiceContext,
  opts: Pick<CoordinatorConfig, "dataDir" | "storageQuota" | "storageQuotaOrgs" | "staleUploadAfterMs">,
): Promise<Feature> {
  const dir = join(opts.dataDir, "nix");
  const files = new NarFiles(dir, new StorageQuotas(ctx.store, opts));
  const sweeper = await startSweeper("NAR uploads", () => files.sweep(opts.staleUploadAfterMs), sweepIntervalMs(opts.staleUploadAfterMs), ctx.log, { leases: ctx.leases, name: "nar-upload-sweep" });
  return {
    name: "nix cache",
    routes(router) {
      router.service(adminv1.NixService, nixService(ctx));
    },
    http: nixCacheHandler(ctx, { dir, files }),
    serviceNames: [adminv1.NixService.typeName],
    close: () => sweeper.close(),
  };
}
