import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "@flotilla/protocol/testing";
import { httpCheck, HttpCheckError } from "./http-check.ts";

describe("httpCheck", () => {
  let server: Server;
  let base = "";
  beforeAll(async () => {
    server = createServer((req, res) => {
      const path = req.url ?? "/";
      if (path === "/ok") return res.end("fine");
      if (path === "/fail") return (res.statusCode = 500), res.end("broken");
      if (path === "/moved") return res.writeHead(302, { location: "/ok" }).end();
      if (path === "/loop") return res.writeHead(302, { location: "/loop" }).end();
      if (path === "/endless") return res.write("x".repeat(65536)); // headers, then a body that never ends
      if (path === "/silent") return; // never answers
      res.statusCode = 404;
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  const signal = () => AbortSignal.timeout(5_000);

  it("answers the status of the response, without reading its body", async () => {
    expect(await httpCheck(`${base}/ok`, signal(), false)).toEqual({ status: 200, url: `${base}/ok` });
    expect((await httpCheck(`${base}/fail`, signal(), false)).status).toBe(500);
    expect((await httpCheck(`${base}/endless`, signal(), false)).status).toBe(200);
  });

  it("follows redirects only when asked, and not forever", async () => {
    expect(await httpCheck(`${base}/moved`, signal(), false)).toEqual({ status: 302, url: `${base}/moved` });
    expect(await httpCheck(`${base}/moved`, signal(), true)).toEqual({ status: 200, url: `${base}/ok` });
    await expect(httpCheck(`${base}/loop`, signal(), true)).rejects.toThrow(/more than 20 redirects/);
  });

  it("says why no answer came: the network error's code, a timeout, a bad URL", async () => {
    const closed = await freePort();
    const refused = await httpCheck(`http://127.0.0.1:${closed}/`, signal(), false).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(HttpCheckError);
    expect(refused).toMatchObject({ message: "ECONNREFUSED", timedOut: false });
    const slow = await httpCheck(`${base}/silent`, AbortSignal.timeout(200), false).catch((e: unknown) => e);
    expect(slow).toMatchObject({ message: "timed out", timedOut: true });
    const stopped = new AbortController();
    const aborted = httpCheck(`${base}/silent`, stopped.signal, false).catch((e: unknown) => e);
    stopped.abort();
    expect(await aborted).toMatchObject({ message: "aborted", timedOut: false });
    await expect(httpCheck("not a url", signal(), false)).rejects.toThrow(/invalid URL/);
    await expect(httpCheck("ftp://127.0.0.1/", signal(), false)).rejects.toThrow(/unsupported URL scheme ftp:/);
  });
});
