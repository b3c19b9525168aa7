import { join } from "node:path";
import { adminv1, agentv1 } from "@flotilla/protocol";
import type { CoordinatorConfig } from "../config.ts";
import type { ServiceContext } from "../context.ts";
import { serveMethods, type Feature } from "../feature.ts";
import { agentService, watchStream } from "./agent-service.ts";
import { deviceStream } from "../server/device-streams.ts";
import { deviceMethods } from "./devices.ts";
import { Hub } from "./hub.ts";
import { joinTokenMethods } from "./join-tokens.ts";
import { Presence, PRESENCE_FLUSH_MS } from "./presence.ts";
import { moveMethods } from "./move.ts";
import { DeviceStatusFeed } from "./status-feed.ts";
import { TufRepository } from "../tuf/repository.ts";

/**
 * Devices as a coordinator feature: the AgentService agents call (enroll, authenticate, watch,
 * report), AdminService's devices and join tokens, and the hub that wakes a device's Watch
 * stream when its desired state changes, and the devices' presence (connected, last seen), written
 * once a second.
 */
export function devicesFeature(ctx: ServiceContext, config?: Pick<CoordinatorConfig, "dataDir" | "tufTimestampTtlMs" | "tufRefreshMs">): Feature {
  const hub = new Hub(ctx.store);
  // With PostgreSQL, status changes reach the WatchDevices readers of every replica.
  const status = new DeviceStatusFeed(ctx.store.dialect === "postgres" ? { events: ctx.store.replicas.events, replicaId: ctx.leases.replicaId, log: ctx.log } : undefined);
  const presence = new Presence(ctx.store, {
    log: ctx.log,
    // Never staler than a keep-alive: with the test fleets' 500 ms keep-alive and 2 s offline
    // timeout, a whole second would eat half the margin.
    flushMs: Math.min(PRESENCE_FLUSH_MS, ctx.keepaliveMs),
    // Read at each connect: the rollout engine starts after the features.
    onConnected: (orgId, deviceId) => ctx.rolloutEvents?.deviceConnected(orgId, deviceId),
    onChanged: (changes) => status.publish(changes),
  });
  // Read only (moves check the organizations' roots); the releases feature signs.
  const tuf = config && new TufRepository(join(config.dataDir, "tuf"), ctx.onlineIdentity, { timestampTtlMs: config.tufTimestampTtlMs, snapshotTtlMs: config.tufTimestampTtlMs, refreshMs: config.tufRefreshMs });
  const currentRoot = async (orgId: string) => (await tuf?.root(orgId))?.toJSON();
  return {
    name: "devices",
    routes(router) {
      router.service(agentv1.AgentService, agentService(ctx, hub, presence, status));
      serveMethods(router, adminv1.AdminService, { ...deviceMethods(ctx, presence, status), ...joinTokenMethods(ctx), ...moveMethods(ctx, currentRoot) });
    },
    deviceStreams: [deviceStream(agentv1.AgentService.method.watch, watchStream(ctx, hub, presence))],
    serviceNames: [agentv1.AgentService.typeName, adminv1.AdminService.typeName],
    async close() {
      hub.close();
      await presence.close();
      status.close();
    },
  };
}
