/**
 * The one shape every part of the coordinator has (access, devices, releases, rollouts,
 * telemetry, the Nix cache, tunnels, web login). startCoordinator builds a list of features and
 * hosts them alike: their Connect services on one router, their plain-HTTP routes in front of it,
 * their service names in the health service, and their close on shutdown.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, MethodImpl, ServiceImpl } from "@connectrpc/connect";
import type { DeviceStream } from "./server/device-streams.ts";
import type { HttpRequest, HttpResponse } from "./server/http.ts";

/** A part of the coordinator, started and ready to be hosted. */
export interface Feature {
  /** For logs and errors: "releases". */
  readonly name: string;
  /** Registers its Connect services (or its share of a service's methods, see {@link serveMethods}). */
  routes?(router: ConnectRouter): void;
  /**
   * Server streams every connected device holds open, served for agents beside Connect with less
   * machinery per stream (server/device-streams.ts); they must also be among its Connect routes.
   */
  readonly deviceStreams?: readonly DeviceStream[];
  /** Answers its plain-HTTP paths and returns true; returns false for any other path. */
  http?(req: HttpRequest, res: HttpResponse): boolean;
  /** The type names of the services it serves, which the health service reports as SERVING. */
  readonly serviceNames: readonly string[];
  /**
   * Stops its background work (timers, engines, open streams). Called once, before the listener
   * closes, while the store is still open; features close in the reverse order of their start.
   */
  close(): Promise<void> | void;
}

/**
 * Registers the given methods of `service`, one by one, so that several features can each serve
 * their share of one service (AdminService: access control here, devices there). Unlike
 * `router.service`, it adds no "unimplemented" handler for the methods left out, which would
 * shadow another feature's.
 */
export function serveMethods<S extends DescService>(router: ConnectRouter, service: S, methods: Partial<ServiceImpl<S>>): void {
  for (const [name, method] of Object.entries(service.method) as [string, DescMethod][]) {
    const impl = (methods as Record<string, MethodImpl<DescMethod> | undefined>)[name];
    if (impl) router.rpc(method, impl);
  }
}
