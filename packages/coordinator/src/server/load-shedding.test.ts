import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { agentv1, createLogger, retryAfterMs } from "@flotilla/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { LoadShedder } from "./load-shedding.ts";

const log = createLogger({ role: "test" });

describe("load shedding", () => {
  let shedder: LoadShedder | undefined;
  afterEach(() => shedder?.close());

  it("tells agents to retry later, with advice, once the sheddable calls in flight reach the limit; Hello is always served", async () => {
    shedder = new LoadShedder({ maxCalls: 1, maxLagMs: 60_000, log, random: () => 0.5 });
    const stackTraceLimit = Error.stackTraceLimit;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const transport = createRouterTransport(
      (router) =>
        router.service(agentv1.AgentService, {
          hello: () => ({}),
          report: async () => {
            await held;
            return { acks: [] };
          },
        }),
      { router: { interceptors: [shedder.interceptor()] } },
    );
    const client = createClient(agentv1.AgentService, transport);
    const first = client.report({ entries: [] });
    const refused = await client.report({ entries: [] }).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    expect(refused?.code).toBe(Code.Unavailable);
    expect(refused?.rawMessage).toBe("the coordinator is busy; try again later");
    expect(retryAfterMs(refused)).toBe(1000);
    expect(shedder.shed).toBe(1);
    // The refusal is made without a stack trace; errors made after it still have theirs.
    expect(Error.stackTraceLimit).toBe(stackTraceLimit);
    await expect(client.hello({})).resolves.toBeDefined();

    release();
    await first;
    await expect(client.report({ entries: [] })).resolves.toBeDefined();
    expect(shedder.shed).toBe(1);
  });
});
