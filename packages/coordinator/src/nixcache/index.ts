import { join } from "node:path";
import { adminv1 } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { nixCacheHandler } from "./http-cache.ts";
import { nixService } from "./nix-service.ts";

/**
 * The Nix binary cache as a coordinator feature: the NixService (an organization's signing
 * keys) and the cache itself over plain HTTP at /nix/<organization>/, its NARs in `<dataDir>/nix`.
 */
export function nixCacheFeature(ctx: ServiceContext, opts: { dataDir: string }): Feature {
  return {
    name: "nix cache",
    routes(router) {
      router.service(adminv1.NixService, nixService(ctx));
    },
    http: nixCacheHandler(ctx, { dir: join(opts.dataDir, "nix") }),
    serviceNames: [adminv1.NixService.typeName],
    close() {},
  };
}
