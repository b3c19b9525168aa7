import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { agentv1, generateIdentity } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import type { DevicePrincipal } from "../access/principal.ts";
import { enrollDevice, SETUP_CODE, startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { deviceStream, deviceStreamRoute } from "./device-streams.ts";
import { ShutdownSignal } from "./shutdown-signal.ts";

/**
 * The lean route on a server of its own, with a real coordinator's store for the sessions it
 * checks. Whatever it leaves to Connect lands in `fellThrough` (answered 404 here).
 */
let t: TestCoordinator;
let server: http2.Http2Server;
let url: string;
let shutdown: ShutdownSignal;
let fellThrough: string[];
let device: { id: string; headers: Record<string, string> };
let admin: { headers: Record<string, string> };

/** What the served stream saw, and what it yields next. */
let calls: { device: DevicePrincipal; agentVersion: string; signal: AbortSignal; ended: boolean }[];
let behaviour: (signal: AbortSignal) => AsyncIterable<agentv1.WatchResponse>;

const keepalive = () => create(agentv1.WatchResponseSchema, { event: { case: "keepalive", value: timestampNow() } });

async function* forever(signal: AbortSignal): AsyncIterable<agentv1.WatchResponse> {
  yield keepalive();
  await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
}

beforeAll(async () => {
  t = await startTestCoordinator();
  admin = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
  device = await enrollDevice(t, admin);
});

afterAll(async () => {
  await t.close();
});

beforeEach(async () => {
  calls = [];
  fellThrough = [];
  behaviour = forever;
  shutdown = new ShutdownSignal();
  const route = deviceStreamRoute({ store: t.coord.store, shutdown, maxMessageBytes: 64 * 1024 }, [
    deviceStream(agentv1.AgentService.method.watch, async function* (d, req, signal) {
      const call = { device: d, agentVersion: req.agentVersion, signal, ended: false };
      calls.push(call);
      try {
        yield* behaviour(signal);
      } finally {
        call.ended = true;
      }
    }),
  ]);
  server = http2.createServer((req, res) => {
    if (route(req, res)) return;
    fellThrough.push(String(req.headers["content-type"]));
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return async () => {
    server.close();
    await new Promise((resolve) => setImmediate(resolve));
  };
});

/** A Connect client as agents make it (HTTP/2, the Connect protocol, binary). */
function agentClient() {
  const sessionManager = new Http2SessionManager(url);
  const client = createClient(agentv1.AgentService, createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager }));
  return { client, close: () => sessionManager.abort() };
}

/** A raw HTTP/2 POST to Watch; resolves with the status, headers and whole body. */
function rawWatch(headers: Record<string, string>, body: Buffer): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": "/flotilla.agent.v1.AgentService/Watch", ...headers });
    const chunks: Buffer[] = [];
    let answer: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (answer = h));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", reject);
    stream.on("end", () => {
      session.close();
      resolve({ status: Number(answer[":status"]), headers: answer, body: Buffer.concat(chunks) });
    });
    stream.end(body);
  });
}

/** A message in Connect's envelope (Connect's own encoder), as a Buffer to cut and join. */
const envelope = (flags: number, data: Uint8Array) => Buffer.from(encodeEnvelope(flags, data));

/** The end-of-stream message of a Connect stream body (the last envelope, flag 2), parsed. */
function endOf(body: Buffer): { error?: { code: string; message: string } } {
  let at = 0;
  for (;;) {
    const flags = body[at]!;
    const length = body.readUInt32BE(at + 1);
    if (flags & 2) return JSON.parse(body.subarray(at + 5, at + 5 + length).toString()) as { error?: { code: string; message: string } };
    at += 5 + length;
  }
}

const watchRequest = () => envelope(0, toBinary(agentv1.WatchRequestSchema, create(agentv1.WatchRequestSchema, { agentVersion: "1.2.3" })));
const connectStream = { "content-type": "application/connect+proto" };

describe("device streams beside Connect", () => {
  it("serves an agent's Watch call: the stream's messages in order, to the device whose session it is", async () => {
    behaviour = async function* () {
      for (let i = 0; i < 3; i++) yield create(agentv1.WatchResponseSchema, { event: { case: "desired", value: { generation: BigInt(i), name: `gen-${i}` } } });
    };
    const { client, close } = agentClient();
    try {
      const got: string[] = [];
      for await (const m of client.watch({ agentVersion: "1.2.3" }, { headers: device.headers })) {
        if (m.event.case === "desired") got.push(m.event.value.name);
      }
      expect(got).toEqual(["gen-0", "gen-1", "gen-2"]);
    } finally {
      close();
    }
    expect(fellThrough).toEqual([]);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.device.deviceId).toBe(device.id);
    expect(calls[0]!.agentVersion).toBe("1.2.3");
  });

  it("refuses a call without a device session before the stream runs: none, a made-up one, an admin's", async () => {
    const { client, close } = agentClient();
    const codeOf = async (headers: Record<string, string>) => {
      try {
        for await (const _ of client.watch({}, { headers })) return "answered";
        return "ended";
      } catch (err) {
        return Code[ConnectError.from(err).code];
      }
    };
    try {
      expect(await codeOf({})).toBe("Unauthenticated");
      expect(await codeOf({ authorization: "Bearer not-a-session" })).toBe("Unauthenticated");
      expect(await codeOf(admin.headers)).toBe("PermissionDenied");
    } finally {
      close();
    }
    expect(calls).toEqual([]);
    expect(fellThrough).toEqual([]);
  });

  it("leaves every other form of the call to Connect: gRPC, JSON, a compressed request", async () => {
    const auth = device.headers;
    await rawWatch({ ...auth, "content-type": "application/grpc+proto", te: "trailers" }, watchRequest());
    await rawWatch({ ...auth, "content-type": "application/connect+json" }, envelope(0, Buffer.from("{}")));
    await rawWatch({ ...auth, ...connectStream, "connect-content-encoding": "gzip" }, watchRequest());
    expect(fellThrough).toEqual(["application/grpc+proto", "application/connect+json", "application/connect+proto"]);
    expect(calls).toEqual([]);
  });

  it("refuses a malformed request body with InvalidArgument, and one over the size limit with ResourceExhausted", async () => {
    const auth = { ...device.headers, ...connectStream };
    const request = watchRequest();
    const refusals = [
      await rawWatch(auth, request.subarray(0, 3)), // shorter than an envelope
      await rawWatch(auth, request.subarray(0, request.length - 1)), // a message cut short
      await rawWatch(auth, Buffer.concat([request, request])), // two messages
      await rawWatch(auth, Buffer.concat([Buffer.from([1]), request.subarray(1)])), // "compressed", without an encoding
      await rawWatch(auth, envelope(0, Buffer.from([0xff, 0xff, 0xff]))), // not a WatchRequest
    ];
    for (const r of refusals) {
      expect(r.status).toBe(200);
      expect(endOf(r.body).error?.code).toBe("invalid_argument");
    }
    const big = await rawWatch(auth, envelope(0, Buffer.alloc(65 * 1024)));
    expect(endOf(big.body).error?.code).toBe("resource_exhausted");
    expect(calls).toEqual([]);
  });

  it("ends the stream's generator when the agent goes away", async () => {
    const { client, close } = agentClient();
    const ac = new AbortController();
    const it = client.watch({}, { headers: device.headers, signal: ac.signal })[Symbol.asyncIterator]();
    expect((await it.next()).value?.event.case).toBe("keepalive");
    ac.abort();
    await waitFor("the stream's generator to end", () => calls[0]?.ended);
    expect(calls[0]!.signal.aborted).toBe(true);
    close();
  });

  it("ends open streams with Unavailable when the coordinator shuts down, and refuses new ones after", async () => {
    const { client, close } = agentClient();
    const next = async (it: AsyncIterator<agentv1.WatchResponse>) => it.next().then(() => undefined, (e: unknown) => ConnectError.from(e).code);
    try {
      const it = client.watch({}, { headers: device.headers })[Symbol.asyncIterator]();
      expect((await it.next()).value?.event.case).toBe("keepalive");
      shutdown.abort();
      expect(await next(it)).toBe(Code.Unavailable);
      await waitFor("the generator to end", () => calls[0]?.ended);
      expect(await next(client.watch({}, { headers: device.headers })[Symbol.asyncIterator]())).toBe(Code.Unavailable);
    } finally {
      close();
    }
  });

  it("ends a stream at the deadline the client sent", async () => {
    const r = await rawWatch({ ...device.headers, ...connectStream, "connect-timeout-ms": "300" }, watchRequest());
    expect(endOf(r.body).error?.code).toBe("deadline_exceeded");
    expect(calls[0]?.ended).toBe(true);
    const bad = await rawWatch({ ...device.headers, ...connectStream, "connect-timeout-ms": "soon" }, watchRequest());
    expect(endOf(bad.body).error?.code).toBe("invalid_argument");
  });

  it("holds back the stream of a device that reads nothing, and still ends it at its deadline", async () => {
    let yielded = 0;
    behaviour = async function* (signal) {
      while (!signal.aborted) {
        yielded++;
        yield create(agentv1.WatchResponseSchema, { event: { case: "desired", value: { name: "x".repeat(32 * 1024) } } });
      }
    };
    const session = http2.connect(url);
    session.on("error", () => {});
    const stream = session.request({ ":method": "POST", ":path": "/flotilla.agent.v1.AgentService/Watch", ...device.headers, ...connectStream, "connect-timeout-ms": "500" });
    stream.on("error", () => {});
    stream.end(watchRequest());
    // Nothing reads the answer: HTTP/2 flow control fills, writes wait, and the deadline ends it.
    try {
      await waitFor("the stream's generator to end at the deadline", () => calls[0]?.ended, 10_000);
      expect(yielded).toBeGreaterThan(0);
      expect(yielded).toBeLessThan(20); // 32 KiB each: a 64 KiB window and one stream buffer, not a flood
    } finally {
      stream.close();
      session.destroy();
    }
  });

  it("answers a store outage during the stream with Unavailable and retry advice", async () => {
    behaviour = async function* () {
      yield keepalive();
      throw Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
    };
    const r = await rawWatch({ ...device.headers, ...connectStream }, watchRequest());
    const end = endOf(r.body) as { error?: { code: string }; metadata?: Record<string, string[]> };
    expect(end.error?.code).toBe("unavailable");
    expect(end.metadata?.["flotilla-retry-after-ms"]).toEqual(["1000"]);
  });
});
