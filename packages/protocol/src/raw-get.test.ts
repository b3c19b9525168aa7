import { createHash, randomBytes } from "node:crypto";
import http2 from "node:http2";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { generateIdentity, keyPin } from "./identity/index.ts";
import { rawGet, type RawResponse } from "./raw-get.ts";
import { selfSignedCertificate } from "./tls/tls.ts";
import { waitFor } from "./testing.ts";

const closers: (() => void)[] = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

async function listen(server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown; close(): unknown }, scheme: string): Promise<string> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(() => void server.close());
  return `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A plain HTTP/1.1 server on loopback. */
function serveHttp(handler: Handler): Promise<string> {
  return listen(createHttpServer(handler), "http");
}

/** A TLS server (HTTP/2 with HTTP/1.1 allowed, as the coordinator's) whose certificate is made from a fresh key; with its pin. */
async function serveTls(handler: Handler): Promise<{ url: string; pin: string }> {
  const identity = generateIdentity();
  const pair = await selfSignedCertificate(identity, { hosts: ["127.0.0.1"] });
  const server = http2.createSecureServer({ allowHTTP1: true, cert: pair.certPem, key: pair.keyPem }, handler as never);
  const sockets = new Set<{ destroy(): void }>();
  server.on("secureConnection", (s) => sockets.add(s));
  const url = await listen(server, "https");
  closers.push(() => sockets.forEach((s) => s.destroy()));
  return { url, pin: keyPin(identity.publicKey) };
}

/** A TCP server that answers every connection with `bytes` and then closes it. */
function serveRaw(bytes: string | Buffer): Promise<string> {
  const server: Server = createTcpServer((s) => {
    s.on("error", () => {});
    s.once("data", () => s.end(bytes));
  });
  return listen(server, "http");
}

/** The body of `res`, read to its end ('end') or to a broken connection ('close'). */
function bodyOf(res: RawResponse): Promise<{ body: Buffer; ended: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ended = false;
    res.on("data", (chunk: Buffer) => chunks.push(Buffer.from(chunk))); // valid during the event only: copied
    res.on("end", () => (ended = true));
    res.on("close", () => resolve({ body: Buffer.concat(chunks), ended }));
  });
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("rawGet", () => {
  it("reads a large body over pinned TLS, every byte in order, with the request's headers", async () => {
    const data = randomBytes(5 * 1024 * 1024 + 123);
    let seen: IncomingMessage | undefined;
    const { url, pin } = await serveTls((req, res) => {
      seen = req;
      res.writeHead(200, { "content-length": String(data.length) });
      res.end(data);
    });
    const res = await rawGet({ url: `${url}/tuf/v1/targets/a%20b?x=1`, pin, headers: { authorization: "Bearer t0ken", range: "bytes=0-" } });
    expect(res.statusCode).toBe(200);
    expect(res.contentLength).toBe(data.length);
    const { body, ended } = await bodyOf(res);
    expect(ended).toBe(true);
    expect(sha(body)).toBe(sha(data));
    expect(seen?.url).toBe("/tuf/v1/targets/a%20b?x=1");
    expect(seen?.headers.authorization).toBe("Bearer t0ken");
    expect(seen?.headers.range).toBe("bytes=0-");
  });

  it("refuses a TLS server whose certificate is not made from the pinned key", async () => {
    const { url } = await serveTls((_req, res) => res.end("secret"));
    await expect(rawGet({ url, pin: keyPin(generateIdentity().publicKey) })).rejects.toThrow(/does not match the pinned key/);
  });

  it("hands the bytes that came with the head to the first 'data' listener, even one added later", async () => {
    const url = await serveRaw("HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nContent-Range: bytes 5-9/10\r\n\r\nhello");
    const res = await rawGet({ url });
    await waitFor("the whole body to arrive before anyone listens", () => res.bytesReceived === 5, 5000);
    expect(res.statusCode).toBe(206);
    expect(res.headers.get("content-range")).toBe("bytes 5-9/10");
    const { body, ended } = await bodyOf(res);
    expect(body.toString()).toBe("hello");
    expect(ended).toBe(true);
  });

  it("stops at Content-Length, and says 'close' without 'end' when the connection broke off first", async () => {
    const long = await rawGet({ url: await serveRaw("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef") });
    expect(await bodyOf(long)).toEqual({ body: Buffer.from("abc"), ended: true });
    const short = await rawGet({ url: await serveRaw("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") });
    expect(await bodyOf(short)).toEqual({ body: Buffer.from("abc"), ended: false });
    expect(short.bytesReceived).toBe(3);
  });

  it("refuses a response without Content-Length, a chunked one, and one that is not HTTP/1.1", async () => {
    await expect(rawGet({ url: await serveRaw("HTTP/1.1 200 OK\r\n\r\nabc") })).rejects.toThrow(/has no Content-Length/);
    await expect(rawGet({ url: await serveRaw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n") })).rejects.toThrow(/transfer-encoding: chunked/);
    await expect(rawGet({ url: await serveRaw("SSH-2.0-OpenSSH_9.2\r\n\r\n") })).rejects.toThrow(/not an HTTP\/1.1 response/);
    await expect(rawGet({ url: await serveRaw(`HTTP/1.1 200 OK\r\nX: ${"a".repeat(40_000)}`) })).rejects.toThrow(/longer than 32768 bytes|closed before the response head/);
  });

  it("refuses a header value with a line break, before connecting", async () => {
    let connections = 0;
    const server = createTcpServer((s) => {
      connections++;
      s.destroy();
    });
    const url = await listen(server, "http");
    await expect(rawGet({ url, headers: { authorization: "Bearer x\r\nX-Injected: 1" } })).rejects.toThrow(/invalid request header "authorization"/);
    expect(connections).toBe(0);
  });

  it("fails on a refused connection, on silence, and when aborted", async () => {
    const closed = createTcpServer();
    const gone = await listen(closed, "http");
    closed.close();
    await expect(rawGet({ url: gone })).rejects.toThrow(/ECONNREFUSED/);
    const silent = await listen(createTcpServer((s) => s.on("error", () => {})), "http");
    await expect(rawGet({ url: silent, timeoutMs: 200 })).rejects.toThrow(/no answer from .* within 200 ms/);
    const abort = new AbortController();
    const pending = rawGet({ url: silent, signal: abort.signal });
    abort.abort(new Error("stopped by the test"));
    await expect(pending).rejects.toThrow(/stopped by the test/);
  });

  it("pauses and resumes reading", async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const url = await serveHttp((_req, res) => {
      res.writeHead(200, { "content-length": String(data.length) });
      res.end(data);
    });
    const res = await rawGet({ url });
    const chunks: Buffer[] = [];
    let paused = false;
    let whilePaused = 0;
    const done = new Promise<void>((r) => res.on("end", r));
    res.on("data", (chunk: Buffer) => {
      if (paused) whilePaused += chunk.length;
      chunks.push(Buffer.from(chunk));
      if (chunks.length === 2) {
        paused = true;
        res.pause();
        setTimeout(() => {
          paused = false;
          res.resume();
        }, 100);
      }
    });
    await done;
    expect(sha(Buffer.concat(chunks))).toBe(sha(data));
    // What was read before the pause took hold, at most one read buffer: the socket stopped.
    expect(whilePaused).toBeLessThanOrEqual(64 * 1024);
  });
});
