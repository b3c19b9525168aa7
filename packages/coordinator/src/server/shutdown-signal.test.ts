import { setMaxListeners } from "node:events";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { healthv1 } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { ShutdownSignal } from "./shutdown-signal.ts";

/** What Connect's shutdownSignal option takes, and how to fire it: Node's own or ours. */
const kinds = {
  "Node's AbortSignal": () => {
    const c = new AbortController();
    // Twenty open calls listen on it, as they would on a server's.
    setMaxListeners(0, c.signal);
    return { signal: c.signal, abort: () => c.abort(), size: () => undefined };
  },
  ShutdownSignal: () => {
    const s = new ShutdownSignal();
    return { signal: s.asAbortSignal(), abort: () => s.abort(), size: () => s.size };
  },
};

/** A Health service whose Watch streams stay open; counts the calls whose context was aborted. */
function served(signal: AbortSignal) {
  const calls = { opened: 0, aborted: 0 };
  const transport = createRouterTransport(
    (router) =>
      router.service(healthv1.Health, {
        check: () => ({ status: healthv1.HealthCheckResponse_ServingStatus.SERVING }),
        async *watch(_req, ctx) {
          calls.opened++;
          if (ctx.signal.aborted) calls.aborted++;
          else ctx.signal.addEventListener("abort", () => calls.aborted++, { once: true });
          yield { status: healthv1.HealthCheckResponse_ServingStatus.SERVING };
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        },
      }),
    { router: { shutdownSignal: signal } },
  );
  return { calls, client: createClient(healthv1.Health, transport) };
}

// The same behaviour through Connect with Node's signal and with ours: a difference means Connect
// started to use more of AbortSignal than ShutdownSignal has.
describe.each(Object.entries(kinds))("Connect's shutdownSignal as %s", (_name, make) => {
  it("aborts every open call when fired, and a finished call leaves no listener behind", async () => {
    const shutdown = make();
    const { calls, client } = served(shutdown.signal);
    const streams = Array.from({ length: 20 }, () => client.watch({})[Symbol.asyncIterator]());
    await Promise.all(streams.map((s) => s.next()));
    expect(calls.opened).toBe(20);
    await client.check({});
    expect(shutdown.size() ?? 20).toBe(20);

    shutdown.abort();
    await waitFor("every open call to be aborted", async () => calls.aborted === 20);
    expect(shutdown.size() ?? 0).toBe(0);
  });

  it("aborts a call that starts after it fired at once", async () => {
    const shutdown = make();
    const { calls, client } = served(shutdown.signal);
    shutdown.abort();
    const stream = client.watch({})[Symbol.asyncIterator]();
    await stream.next().catch(() => undefined);
    expect(calls.opened).toBe(1);
    expect(calls.aborted).toBe(1);
    expect(shutdown.size() ?? 0).toBe(0);
  });
});
