import { spawn, type ChildProcess } from "node:child_process";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { adminv1, coordinatorTransport, retryAfterHeader, type ClosableTransport } from "@flotilla/protocol";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { afterEach, describe, expect, it } from "vitest";
import { brokenConnection, retryBrokenCalls } from "./retry.ts";

/**
 * A coordinator stand-in in its own process whose event loop is stuck for `stallMs` in each of
 * its first `stalls` calls, as a coordinator busy with a large fleet is: it reads no socket and
 * answers no HTTP/2 ping meanwhile, then answers the call (an empty message, which every
 * response here may be) when the client has long given the connection up. Prints each call.
 */
const STALLING_SERVER = `
const http2 = require("node:http2");
const [stalls, stallMs] = process.argv.slice(1).map(Number);
let seen = 0;
const server = http2.createServer();
server.on("stream", (stream, headers) => {
  process.stdout.write("call " + headers[":path"] + "\\n");
  if (seen++ < stalls) { const end = Date.now() + stallMs; while (Date.now() < end); }
  stream.on("error", () => {});
  stream.respond({ ":status": 200, "content-type": "application/proto" });
  stream.end();
});
server.on("sessionError", () => {});
server.listen(0, "127.0.0.1", () => process.stdout.write("port " + server.address().port + "\\n"));
`;

const children: ChildProcess[] = [];
const transports: ClosableTransport[] = [];

afterEach(() => {
  for (const t of transports.splice(0)) t.close();
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

async function stallingServer(stalls: number, stallMs = 1500): Promise<{ url: string; calls: () => string[] }> {
  const child = spawn(process.execPath, ["-e", STALLING_SERVER, String(stalls), String(stallMs)], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  const port = await waitFor("the server's port", () => /port (\d+)/.exec(out)?.[1], 10_000, 20);
  return { url: `http://127.0.0.1:${port}`, calls: () => [...out.matchAll(/call \S+\/(\w+)/g)].map((m) => m[1]!) };
}

async function client(url: string, retries: { method: string; delayMs: number }[], baseMs = 20) {
  const t = await coordinatorTransport({
    url,
    pingIntervalMs: 100,
    pingTimeoutMs: 200,
    interceptors: [retryBrokenCalls({ baseMs, maxMs: 8 * baseMs, onRetry: (method, _err, delayMs) => retries.push({ method, delayMs }) })],
  });
  transports.push(t);
  return createClient(adminv1.AdminService, t.transport);
}

describe("retryBrokenCalls", () => {
  it("sends a read again when a stalled coordinator let its ping time out, and tells why", async () => {
    // Each stall outlasts the ping's deadline (about 300 ms after the call); each retry comes
    // after the stall it met (at least 750 ms after that deadline).
    const { url, calls } = await stallingServer(2, 600);
    const retries: { method: string; delayMs: number }[] = [];
    await (await client(url, retries, 1500)).whoAmI({});
    expect(retries.map((r) => r.method)).toEqual(["WhoAmI", "WhoAmI"]);
    await waitFor("the server to log all three calls", () => calls().length === 3 || undefined, 10_000, 20);
    expect(calls()).toEqual(["WhoAmI", "WhoAmI", "WhoAmI"]);
    // Jittered backoff: at least half of the exponential step, at most all of it.
    expect(retries[0]!.delayMs).toBeGreaterThanOrEqual(750);
    expect(retries[0]!.delayMs).toBeLessThanOrEqual(1500);
    expect(retries[1]!.delayMs).toBeGreaterThanOrEqual(1500);
    expect(retries[1]!.delayMs).toBeLessThanOrEqual(3000);
  });

  it("gives up after its attempts with the connection's error", async () => {
    const { url } = await stallingServer(10, 800);
    const retries: { method: string; delayMs: number }[] = [];
    const err = await (await client(url, retries)).whoAmI({}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect((err as ConnectError).rawMessage).toBe("PING timed out");
    expect(retries).toHaveLength(3);
  });

  it("never sends a call that creates something twice: its first attempt may have landed", async () => {
    const { url, calls } = await stallingServer(1);
    const retries: { method: string; delayMs: number }[] = [];
    const err = await (await client(url, retries)).createJoinToken({}).catch((e: unknown) => e);
    expect((err as ConnectError).rawMessage).toBe("PING timed out");
    expect(retries).toEqual([]);
    expect(calls()).toEqual(["CreateJoinToken"]);
  });

  it("fails at once when nobody listens, or when the coordinator answered with advice", async () => {
    const retries: { method: string; delayMs: number }[] = [];
    const err = await (await client(`http://127.0.0.1:${await freePort()}`, retries)).whoAmI({}).catch((e: unknown) => e);
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect(brokenConnection(err)).toBe(false);
    expect(retries).toEqual([]);

    const advised = new ConnectError("the database is unavailable", Code.Unavailable, { [retryAfterHeader]: "1000" });
    expect(brokenConnection(advised)).toBe(false);
    expect(brokenConnection(new ConnectError("PING timed out", Code.Unavailable))).toBe(true);
    expect(brokenConnection(new ConnectError("no", Code.PermissionDenied))).toBe(false);
  });
});
