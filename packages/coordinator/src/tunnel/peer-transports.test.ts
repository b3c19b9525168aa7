import http2 from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { coordinatorTransport, healthv1, type ClosableTransport } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { healthService } from "../server/health-service.ts";
import { PeerTransports } from "./peer-transports.ts";

/** A stand-in for coordinatorTransport that records what was opened and closed. */
function fakeOpener(fail: (address: string) => boolean = () => false) {
  const opened: { address: string; closed: boolean; broken: boolean; transport: Transport }[] = [];
  const open = async (address: string): Promise<ClosableTransport> => {
    await Promise.resolve();
    if (fail(address)) throw new Error(`cannot reach ${address}`);
    const t = { address, closed: false, broken: false, transport: {} as Transport };
    opened.push(t);
    return { transport: t.transport, close: () => (t.closed = true), sessionFailed: () => t.broken };
  };
  return { opened, open };
}

describe("connections to other replicas", () => {
  it("shares one transport per replica among tunnels at once and one after another", async () => {
    const f = fakeOpener();
    const peers = new PeerTransports(f.open);
    const [a, b] = await Promise.all([peers.acquire("rep_1", "http://a:1"), peers.acquire("rep_1", "http://a:1")]);
    expect(a.transport).toBe(b.transport);
    a.release(false);
    b.release(false);
    const c = await peers.acquire("rep_1", "http://a:1");
    expect(c.transport).toBe(a.transport);
    const other = await peers.acquire("rep_2", "http://b:1");
    expect(other.transport).not.toBe(a.transport);
    expect(f.opened.map((t) => t.address)).toEqual(["http://a:1", "http://b:1"]);
    expect(peers.opened).toBe(2);
    expect(f.opened.some((t) => t.closed)).toBe(false);
    c.release(false);
    other.release(false);
    peers.close();
    expect(f.opened.every((t) => t.closed)).toBe(true);
    await expect(peers.acquire("rep_1", "http://a:1")).rejects.toThrow(/shutting down/);
  });

  it("opens a new transport when the replica's address changed, closing the old one once its tunnel ends", async () => {
    const f = fakeOpener();
    const peers = new PeerTransports(f.open);
    const old = await peers.acquire("rep_1", "http://a:1");
    const moved = await peers.acquire("rep_1", "http://a:2");
    expect(moved.transport).not.toBe(old.transport);
    expect(f.opened[0]!.closed).toBe(false);
    old.release(false);
    expect(f.opened[0]!.closed).toBe(true);
    expect(f.opened[1]!.closed).toBe(false);
    moved.release(false);
    peers.close();
  });

  it("lends a transport no more after a tunnel on it broke, and closes it once the others on it end", async () => {
    const f = fakeOpener();
    const peers = new PeerTransports(f.open);
    const [a, b] = await Promise.all([peers.acquire("rep_1", "http://a:1"), peers.acquire("rep_1", "http://a:1")]);
    a.release(true);
    a.release(true);
    expect(f.opened[0]!.closed).toBe(false);
    const fresh = await peers.acquire("rep_1", "http://a:1");
    expect(fresh.transport).not.toBe(b.transport);
    b.release(false);
    expect(f.opened[0]!.closed).toBe(true);
    fresh.release(false);
    peers.close();
  });

  it("opens a new transport when the kept one's HTTP/2 session ended in an error while idle", async () => {
    const f = fakeOpener();
    const peers = new PeerTransports(f.open);
    (await peers.acquire("rep_1", "http://a:1")).release(false);
    f.opened[0]!.broken = true;
    const next = await peers.acquire("rep_1", "http://a:1");
    expect(next.transport).not.toBe(f.opened[0]!.transport);
    expect(f.opened[0]!.closed).toBe(true);
    next.release(false);
    peers.close();
  });

  it("closes a transport left idle, and keeps none that could not be opened", async () => {
    let down = true;
    const f = fakeOpener(() => down);
    const peers = new PeerTransports(f.open, 50);
    await expect(peers.acquire("rep_1", "http://a:1")).rejects.toThrow(/cannot reach/);
    expect(peers.size).toBe(0);
    down = false;
    const t = await peers.acquire("rep_1", "http://a:1");
    t.release(false);
    await waitFor("the idle transport to be closed", () => f.opened[0]!.closed, 5_000, 10);
    expect(peers.size).toBe(0);
    const again = await peers.acquire("rep_1", "http://a:1");
    expect(f.opened).toHaveLength(2);
    again.release(false);
    peers.close();
  });
});

describe("connections to other replicas over real HTTP/2", () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  /** An h2c server answering the health service, counting the HTTP/2 sessions it accepted. */
  async function server() {
    const sessions: http2.ServerHttp2Session[] = [];
    const sockets: Socket[] = [];
    const srv = http2.createServer(connectNodeAdapter({ routes: (r) => r.service(healthv1.Health, healthService([])) }));
    srv.on("session", (s) => sessions.push(s));
    srv.on("connection", (s: Socket) => sockets.push(s));
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => {
      for (const s of sessions) s.destroy();
      srv.close();
    });
    return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, sessions, sockets };
  }

  async function check(peers: PeerTransports, url: string): Promise<void> {
    const lease = await peers.acquire("rep_1", url);
    try {
      await createClient(healthv1.Health, lease.transport).check({});
      lease.release(false);
    } catch (err) {
      lease.release(true);
      throw err;
    }
  }

  it("carries calls one after another on one session, and opens a new one after the session broke, mid-call or idle", async () => {
    const s = await server();
    const peers = new PeerTransports((url) => coordinatorTransport({ url }));
    cleanups.push(() => peers.close());
    await check(peers, s.url);
    await check(peers, s.url);
    expect(s.sessions).toHaveLength(1);

    // Broken while idle: the connection's socket is cut under it.
    s.sockets[0]!.destroy();
    // A call racing the client's noticing may fail; the next ones go through on a new session.
    await waitFor("a call after the cut to go through", () => check(peers, s.url).then(() => true, () => undefined), 5_000, 10);
    expect(s.sessions).toHaveLength(2);

    // Broken during a call: the call fails, the next one opens a new session.
    const lease = await peers.acquire("rep_1", s.url);
    const watching = createClient(healthv1.Health, lease.transport).watch({})[Symbol.asyncIterator]();
    expect((await watching.next()).value?.status).toBe(healthv1.HealthCheckResponse_ServingStatus.SERVING);
    s.sockets[1]!.destroy();
    const ended = await watching.next().then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    // Node ends the stream as cancelled when its connection is cut.
    expect([Code.Canceled, Code.Unavailable]).toContain(ended?.code);
    lease.release(true);
    await check(peers, s.url);
    expect(s.sessions).toHaveLength(3);
    expect(peers.opened).toBeLessThanOrEqual(3);
  });
});
