import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { agentv1, commonv1, silentLogger } from "@flotilla/protocol";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { AgentExit } from "../exit.ts";
import type { Enrollment } from "../state.ts";
import { ConnectionHolder, type ConnectionHolderOptions, type LiveConnection } from "./connection-holder.ts";
import type { Connection } from "./dial.ts";

const enrollment: Enrollment = { url: "http://coordinator.test", pin: "pin-1", deviceId: "dev_1", name: "d1", orgId: "org_1", enrolledAt: 0 };

function desired(generation: number, lifecycle = commonv1.Lifecycle.APPROVED): agentv1.WatchResponse {
  return create(agentv1.WatchResponseSchema, { event: { case: "desired", value: create(agentv1.DesiredStateSchema, { generation: BigInt(generation), lifecycle }) } });
}

/**
 * A coordinator in memory: each connection's Watch stream sends `messages`, then stays open
 * until the agent ends it (`hold`) or closes.
 */
function connection(messages: agentv1.WatchResponse[], opts: { hold?: boolean; rotatedPin?: string } = {}) {
  const conn = { closed: 0, watches: 0 };
  const transport = createRouterTransport(({ service }) => {
    service(agentv1.AgentService, {
      async *watch(_req, ctx) {
        conn.watches++;
        yield* messages;
        if (opts.hold) await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
      },
    });
  });
  const value: Connection = {
    client: createClient(agentv1.AgentService, transport),
    session: create(agentv1.AuthenticateResponseSchema, { sessionToken: "token" }),
    transport,
    close: () => void conn.closed++,
    ...(opts.rotatedPin ? { rotatedPin: opts.rotatedPin } : {}),
  };
  return Object.assign(conn, { value });
}

const unavailable = () => new ConnectError("connection refused", Code.Unavailable);

const stops: AbortController[] = [];
afterEach(() => {
  for (const s of stops.splice(0)) s.abort();
});

function holderWith(overrides: Partial<ConnectionHolderOptions>) {
  const stop = new AbortController();
  stops.push(stop);
  const holder = new ConnectionHolder({
    enrollment,
    watchTimeoutMs: 60_000,
    backoffMinMs: 100,
    backoffMaxMs: 1_000,
    dial: () => Promise.reject(unavailable()),
    saveEnrollment: () => Promise.resolve(),
    watchRequest: () => ({ agentVersion: "test", capabilities: [] }),
    onDesired: () => Promise.resolve(undefined),
    log: silentLogger,
    ...overrides,
  });
  return { holder, stop };
}

describe("ConnectionHolder", () => {
  it("backs off with growing, jittered delays between failures and starts over once desired state arrived", async () => {
    const jitter = [0.5, 0.25, 0.75, 0.5, 0.5];
    const delays: number[] = [];
    let dials = 0;
    const { holder, stop } = holderWith({
      // Three failures, a connection that brings desired state and closes, one more failure.
      dial: () => (++dials === 4 ? Promise.resolve(connection([desired(1)]).value) : Promise.reject(unavailable())),
      random: () => jitter[delays.length] ?? 0,
      sleep: (ms) => {
        delays.push(ms);
        if (delays.length === 5) stop.abort();
        return Promise.resolve();
      },
    });
    await expect(holder.run(stop.signal)).resolves.toBe("stopped");
    // Caps 100, 200, 400 (doubling from backoffMinMs), then 100 again after the success, then 200.
    expect(delays).toEqual([50, 50, 300, 50, 100]);
  });

  it("dials the failover addresses in turn, growing the backoff once per round over them, and tells which one it holds", async () => {
    const urls: string[] = [];
    const delays: number[] = [];
    const conn = connection([desired(1)], { hold: true });
    const { holder, stop } = holderWith({
      enrollment: { ...enrollment, failoverUrls: ["http://b.test", "http://c.test"] },
      // a and b are down; c answers.
      dial: (url) => {
        urls.push(url);
        return url === "http://c.test" && urls.length > 3 ? Promise.resolve(conn.value) : Promise.reject(unavailable());
      },
      random: () => 0.999,
      sleep: (ms) => {
        delays.push(ms);
        return Promise.resolve();
      },
    });
    const done = holder.run(stop.signal);
    await vi.waitFor(() => expect(holder.current?.url).toBe("http://c.test"));
    expect(urls).toEqual(["http://coordinator.test", "http://b.test", "http://c.test", "http://coordinator.test", "http://b.test", "http://c.test"]);
    // Caps: 100 for the first round of three, 200 for the second.
    expect(delays).toEqual([100, 100, 100, 200, 200]);
    stop.abort();
    await done;
  });

  it("never waits longer than backoffMaxMs", async () => {
    const delays: number[] = [];
    const { holder, stop } = holderWith({
      random: () => 0.999,
      sleep: (ms) => {
        delays.push(ms);
        if (delays.length === 8) stop.abort();
        return Promise.resolve();
      },
    });
    await holder.run(stop.signal);
    expect(Math.max(...delays)).toBe(999);
    expect(delays.slice(4)).toEqual([999, 999, 999, 999]);
  });

  it("tells listeners of each connection and its end, and reconnects when asked to", async () => {
    const conns = [connection([], { hold: true }), connection([], { hold: true })];
    let dials = 0;
    const { holder, stop } = holderWith({ dial: () => Promise.resolve(conns[Math.min(dials++, 1)]!.value), sleep: () => Promise.resolve() });
    const seen: (LiveConnection | undefined)[] = [];
    holder.onChange((live) => seen.push(live));
    const done = holder.run(stop.signal);
    await vi.waitFor(() => expect(holder.current?.conn).toBe(conns[0]!.value));
    expect(holder.lastHeardAt).toBeTypeOf("number");
    holder.reconnect();
    await vi.waitFor(() => expect(holder.current?.conn).toBe(conns[1]!.value));
    expect(seen.map((l) => l?.conn)).toEqual([conns[0]!.value, undefined, conns[1]!.value]);
    expect(seen[0]!.signal.aborted).toBe(true);
    expect(conns[0]!.closed).toBe(1);
    stop.abort();
    await expect(done).resolves.toBe("stopped");
    expect(holder.current).toBeUndefined();
    expect(holder.lastHeardAt).toBeUndefined();
    expect(conns[1]!.closed).toBe(1);
  });

  it("reconnects when the coordinator stays silent for watchTimeoutMs", async () => {
    const conns = [connection([], { hold: true }), connection([], { hold: true })];
    let dials = 0;
    const { holder, stop } = holderWith({ watchTimeoutMs: 50, dial: () => Promise.resolve(conns[Math.min(dials++, 1)]!.value), sleep: () => Promise.resolve() });
    const done = holder.run(stop.signal);
    await vi.waitFor(() => expect(conns[1]!.watches).toBe(1));
    expect(conns[0]!.closed).toBe(1);
    stop.abort();
    await done;
  });

  it("hands desired state on, notes each message as heard, and ends with the exit reason it gives", async () => {
    const conn = connection([desired(1), desired(2, commonv1.Lifecycle.DECOMMISSIONED)], { hold: true });
    const applied: bigint[] = [];
    let heard = 0;
    const { holder, stop } = holderWith({
      dial: () => Promise.resolve(conn.value),
      onDesired: (d): Promise<AgentExit | undefined> => {
        applied.push(d.generation);
        return Promise.resolve(d.lifecycle === commonv1.Lifecycle.DECOMMISSIONED ? "decommissioned" : undefined);
      },
    });
    holder.onHeard(() => heard++);
    await expect(holder.run(stop.signal)).resolves.toBe("decommissioned");
    expect(applied).toEqual([1n, 2n]);
    expect(heard).toBe(2);
    expect(conn.closed).toBe(1);
    expect(holder.current).toBeUndefined();
  });

  it("re-pins to a rotated coordinator key, stores it and dials with it from then on", async () => {
    const pins: string[] = [];
    const saved: Enrollment[] = [];
    const { holder, stop } = holderWith({
      dial: (_url, pin) => {
        pins.push(pin);
        if (pins.length === 1) return Promise.resolve(connection([], { rotatedPin: "pin-2" }).value);
        stop.abort();
        return Promise.reject(unavailable());
      },
      saveEnrollment: (e) => {
        saved.push(e);
        return Promise.resolve();
      },
      sleep: () => Promise.resolve(),
    });
    await holder.run(stop.signal);
    expect(pins).toEqual(["pin-1", "pin-2"]);
    expect(saved).toEqual([{ ...enrollment, pin: "pin-2" }]);
  });
});
