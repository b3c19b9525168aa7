import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "@flotilla/protocol/testing";
import { httpCheck, HttpCheckError } from "./http-check.ts";
import { runHealthChecks } from "./nixos/health.ts";

describe("health URLs", () => {
  let server: Server;
  let base = "";
  let flaky = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      const path = req.url ?? "/";
      if (path === "/ok") return res.end("fine");
      if (path === "/fail") return (res.statusCode = 500), res.end("broken");
      if (path === "/moved") return res.writeHead(302, { location: "/ok" }).end();
      if (path === "/loop") return res.writeHead(302, { location: "/loop" }).end();
      if (path === "/endless") return res.write("x".repeat(65536)); // headers, then a body that never ends
      if (path === "/silent") return; // never answers
      if (path === "/flaky") return (res.statusCode = ++flaky < 3 ? 503 : 200), res.end();
      res.statusCode = 500;
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

  it("httpCheck answers the status of the response, without reading its body", async () => {
    expect(await httpCheck(`${base}/ok`, signal(), false)).toEqual({ status: 200, url: `${base}/ok` });
    expect((await httpCheck(`${base}/fail`, signal(), false)).status).toBe(500);
    expect((await httpCheck(`${base}/endless`, signal(), false)).status).toBe(200);
  });

  it("httpCheck follows redirects only when asked, and not forever", async () => {
    expect(await httpCheck(`${base}/moved`, signal(), false)).toEqual({ status: 302, url: `${base}/moved` });
    expect(await httpCheck(`${base}/moved`, signal(), true)).toEqual({ status: 200, url: `${base}/ok` });
    await expect(httpCheck(`${base}/loop`, signal(), true)).rejects.toThrow(/more than 20 redirects/);
  });

  it("httpCheck says why no answer came: the network error's code, a timeout, a bad URL", async () => {
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

  it("a NixOS release's checks pass once the URL answers 2xx, after redirects and retries", async () => {
    await runHealthChecks({ windowSeconds: 60, http: `${base}/ok` }, undefined, AbortSignal.timeout(10_000));
    await runHealthChecks({ windowSeconds: 60, http: `${base}/moved` }, undefined, AbortSignal.timeout(10_000));
    await runHealthChecks({ windowSeconds: 60, http: `${base}/flaky`, command: "true" }, undefined, AbortSignal.timeout(10_000));
    expect(flaky).toBe(3);
  });

  it("a NixOS release's checks fail with the last answer when the window ends", async () => {
    await expect(runHealthChecks({ windowSeconds: 60, http: `${base}/broken` }, undefined, AbortSignal.timeout(1_500))).rejects.toThrow(`health URL ${base}/broken did not pass: HTTP 500`);
    await expect(runHealthChecks({ windowSeconds: 60, command: "exit 3" }, undefined, AbortSignal.timeout(1_500))).rejects.toThrow(/health command "exit 3" did not pass: exit 3/);
  });
});
