import { createServer, type Http2Server, type ServerHttp2Stream } from "node:http2";
import type { AddressInfo } from "node:net";
import { createClient } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { ADMIN_RECEIVE_WINDOW_BYTES, coordinatorTransport, type ClosableTransport } from "./client.ts";
import { adminv1 } from "./index.ts";

const servers: Http2Server[] = [];
const transports: ClosableTransport[] = [];
afterEach(async () => {
  for (const t of transports.splice(0)) t.close();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/**
 * A plain HTTP/2 server that notes, when a call's request has fully arrived (the moment a
 * coordinator starts to answer), how many bytes the client lets it send before it must wait for a
 * WINDOW_UPDATE: on the call's stream (the client's initial window) and on the connection.
 * It answers with an empty message.
 */
async function windowServer(): Promise<{ url: string; seen: { stream: number; connection: number }[] }> {
  const seen: { stream: number; connection: number }[] = [];
  const server = createServer();
  server.on("stream", (stream: ServerHttp2Stream) => {
    stream.on("error", () => {});
    stream.resume();
    stream.on("end", () => {
      seen.push({ stream: stream.session!.remoteSettings.initialWindowSize!, connection: stream.session!.state.remoteWindowSize! });
      stream.respond({ ":status": 200, "content-type": "application/proto" });
      stream.end();
    });
  });
  server.on("sessionError", () => {});
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

describe("coordinatorTransport's receive window", () => {
  it("lets the coordinator send a whole answer of megabytes at once (no WINDOW_UPDATE round trip per 64 KiB)", async () => {
    const { url, seen } = await windowServer();
    const t = await coordinatorTransport({ url, receiveWindowBytes: ADMIN_RECEIVE_WINDOW_BYTES });
    transports.push(t);
    const c = createClient(adminv1.AdminService, t.transport);
    await c.whoAmI({});
    await c.whoAmI({});
    expect(seen).toHaveLength(2);
    for (const s of seen) {
      expect(s.stream).toBe(ADMIN_RECEIVE_WINDOW_BYTES);
      expect(s.connection).toBeGreaterThanOrEqual(ADMIN_RECEIVE_WINDOW_BYTES);
    }
  });

  it("keeps HTTP/2's 64 KiB windows when none is asked for", async () => {
    const { url, seen } = await windowServer();
    const t = await coordinatorTransport({ url });
    transports.push(t);
    await createClient(adminv1.AdminService, t.transport).whoAmI({});
    expect(seen).toEqual([{ stream: 65_535, connection: expect.any(Number) }]);
    expect(seen[0]!.connection).toBeLessThanOrEqual(65_535);
  });
});
