import type { ServiceImpl } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { healthv1 } from "@flotilla/protocol";

const SERVING = healthv1.HealthCheckResponse_ServingStatus.SERVING;

/** The standard gRPC health service: "" and every service the coordinator serves answer SERVING. */
export function healthService(serviceNames: string[]): ServiceImpl<typeof healthv1.Health> {
  const known = new Set(["", ...serviceNames]);
  return {
    check(req) {
      if (!known.has(req.service)) throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
      return { status: SERVING };
    },
    list() {
      return { statuses: Object.fromEntries([...known].map((s) => [s, { status: SERVING }])) };
    },
    async *watch(req, ctx) {
      yield {
        status: known.has(req.service)
          ? SERVING
          : healthv1.HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN,
      };
      await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
    },
  };
}
