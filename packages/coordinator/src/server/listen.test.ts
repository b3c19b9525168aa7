import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import { generateIdentity, selfSignedCertificate } from "@flotilla/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { isLoopback, listen, LISTEN_BACKLOG, type Listener, type RequestHandler } from "./listen.ts";
import { h2Get, waitFor } from "@flotilla/protocol/testing";

const listeners: Listener[] = [];

afterEach(async () => {
  await Promise.all(listeners.splice(0).map((l) => l.close()));
});

/** Rejects if `promise` has not settled within `ms`. */
function within<T>(ms: number, promise: Promise<T>, what = "operation"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Responses to `/later`, for the test to finish when it likes. */
const later: ((body: string) => void)[] = [];

/** Answers with the HTTP version; `/stream` sends its head and then never ends. */
const handler: RequestHandler = (req, res) => {
  if (req.url === "/later") {
    later.push((body) => res.end(body));
    return;
  }
  if (req.url === "/stream") {
    // Both response types stream a body with write(); the union's overloads hide that.
    (res as http.ServerResponse).write("open\n");
    return;
  }
  res.end(`version ${req.httpVersion}`);
};

async function start(tls?: { certPem: string; keyPem: string }): Promise<Listener> {
  const listener = await listen({ host: "127.0.0.1", port: 0, handler, tls });
  listeners.push(listener);
  return listener;
}

function http1Get(url: string, options: https.RequestOptions = {}): Promise<string> {
  const get = url.startsWith("https:") ? https.get : http.get;
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false, ...options }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve(body));
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}

/** Opens a raw TCP connection, writes `parts` one at a time, and collects what comes back. */
function rawExchange(port: number, parts: Buffer[], until: (received: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true });
    let received = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (until(received)) {
        socket.destroy();
        resolve(received);
      }
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error(`connection closed after ${received.length} bytes`)));
    const writeNext = (i: number): void => {
      const part = parts[i];
      if (part === undefined) return;
      // Let each part leave on its own before the next one.
      socket.write(part, () => setImmediate(() => writeNext(i + 1)));
    };
    socket.once("connect", () => writeNext(0));
  });
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
/** An empty SETTINGS frame: length 0, type 4, no flags, stream 0. */
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

describe("listen without TLS", () => {
  it("serves HTTP/1.1 and h2c with prior knowledge on the same port", async () => {
    const listener = await start();
    expect(listener.url).toBe(`http://127.0.0.1:${listener.port}`);
    expect(await within(5000, http1Get(`${listener.url}/`))).toBe("version 1.1");
    expect(await within(5000, h2Get(listener.url))).toBe("version 2.0");
  });

  it("waits for the whole preface when it arrives in pieces", async () => {
    const listener = await start();
    const reply = await within(
      5000,
      rawExchange(listener.port, [PREFACE.subarray(0, 3), PREFACE.subarray(3, 10), Buffer.concat([PREFACE.subarray(10), EMPTY_SETTINGS])], (r) => r.length >= 9),
    );
    expect(reply[3]).toBe(4); // the server's own SETTINGS frame
  });

  it("hands a request split across packets to HTTP/1.1 intact", async () => {
    const listener = await start();
    const reply = await within(
      5000,
      rawExchange(
        listener.port,
        [Buffer.from("GET / HT"), Buffer.from("TP/1.1\r\nHost: x\r\n"), Buffer.from("Connection: close\r\n\r\n")],
        (r) => r.toString("latin1").includes("version 1.1"),
      ),
    );
    expect(reply.toString("latin1")).toMatch(/^HTTP\/1\.1 200/);
  });

  it("drops a connection that closes before the protocol is known, and keeps serving", async () => {
    const listener = await start();
    await within(
      5000,
      new Promise<void>((resolve, reject) => {
        const socket = net.connect({ host: "127.0.0.1", port: listener.port }, () => socket.end("PRI"));
        socket.on("error", reject);
        socket.on("close", () => resolve());
        socket.resume();
      }),
      "early close",
    );
    expect(await within(5000, h2Get(listener.url))).toBe("version 2.0");
  });

  it("closes while an h2 stream, an HTTP/1.1 keep-alive and an undecided connection are open", async () => {
    const listener = await start();

    const session = http2.connect(listener.url);
    session.on("error", () => {});
    const stream = session.request({ ":path": "/stream" });
    stream.on("error", () => {});
    await within(5000, new Promise((resolve) => stream.once("data", resolve)), "first stream chunk");
    const streamClosed = new Promise((resolve) => stream.once("close", resolve));

    const agent = new http.Agent({ keepAlive: true });
    expect(await within(5000, http1Get(`${listener.url}/`, { agent }))).toBe("version 1.1");
    const keptAlive = Object.values(agent.freeSockets).flat();
    expect(keptAlive).toHaveLength(1);

    const silent = net.connect({ host: "127.0.0.1", port: listener.port });
    silent.on("error", () => {});
    await within(5000, new Promise((resolve) => silent.once("connect", resolve)), "silent connect");

    await within(5000, listener.close(), "close()");
    await within(5000, streamClosed, "stream close");
    agent.destroy();
    silent.destroy();
    session.destroy();
    await expect(within(5000, http1Get(`${listener.url}/`))).rejects.toThrow(/ECONNREFUSED/);
  });

  it("lets an HTTP/1.1 response in flight finish during close", async () => {
    const listener = await start();
    const response = http1Get(`${listener.url}/later`);
    await waitFor("the request to arrive", () => later.length === 1, 5000, 5);
    const closed = listener.close();
    later.shift()?.("finished");
    expect(await within(5000, response)).toBe("finished");
    await within(5000, closed, "close()");
  });
});

describe("listen with TLS", () => {
  it("serves HTTP/1.1 over https and h2 on the same port", async () => {
    const pair = await selfSignedCertificate(generateIdentity(), { hosts: ["127.0.0.1"] });
    const listener = await start(pair);
    expect(listener.url).toBe(`https://127.0.0.1:${listener.port}`);
    expect(await within(5000, http1Get(`${listener.url}/`, { ca: [pair.certPem] }))).toBe("version 1.1");
    expect(await within(5000, h2Get(listener.url, { ca: [pair.certPem] }))).toBe("version 2.0");
  });

  it("closes while an h2 stream and an HTTP/1.1 keep-alive are open", async () => {
    const pair = await selfSignedCertificate(generateIdentity(), { hosts: ["127.0.0.1"] });
    const listener = await start(pair);

    const session = http2.connect(listener.url, { ca: [pair.certPem] });
    session.on("error", () => {});
    const stream = session.request({ ":path": "/stream" });
    stream.on("error", () => {});
    await within(5000, new Promise((resolve) => stream.once("data", resolve)), "first stream chunk");

    const agent = new https.Agent({ keepAlive: true, ca: [pair.certPem] });
    expect(await within(5000, http1Get(`${listener.url}/`, { agent }))).toBe("version 1.1");

    await within(5000, listener.close(), "close()");
    agent.destroy();
    session.destroy();
  });
});

describe("isLoopback", () => {
  it.each(["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"])(
    "accepts %s",
    (host) => expect(isLoopback(host)).toBe(true),
  );
  it.each(["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "example.com", "localhost.example.com", "::2"])(
    "refuses %s",
    (host) => expect(isLoopback(host)).toBe(false),
  );
});

describe("listen queue", () => {
  it("asks the kernel for the listen queue it chose (1,024), not Node's default of 511", async () => {
    const listener = await start();
    // For a listening socket, ss shows the queue's size as Send-Q.
    const line = execFileSync("ss", ["-Hltn", `sport = :${listener.port}`], { encoding: "utf8" }).trim();
    const queue = Number(line.split(/\s+/)[2]);
    const somaxconn = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8"));
    expect(queue).toBe(Math.min(LISTEN_BACKLOG, somaxconn));
    expect(queue).toBeGreaterThan(511);
  });
});
