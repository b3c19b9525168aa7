import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runHealthChecks } from "./health.ts";

describe("NixOS health checks", () => {
  let server: Server;
  let base = "";
  let flaky = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === "/ok") return res.end("fine");
      if (req.url === "/moved") return res.writeHead(301, { location: "/ok" }).end();
      if (req.url === "/flaky") return (res.statusCode = ++flaky < 3 ? 503 : 200), res.end();
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

  it("passes once the URL answers 2xx, after redirects and retries", async () => {
    await runHealthChecks({ http: `${base}/ok` }, undefined, AbortSignal.timeout(10_000));
    await runHealthChecks({ http: `${base}/moved` }, undefined, AbortSignal.timeout(10_000));
    await runHealthChecks({ http: `${base}/flaky`, command: "true" }, undefined, AbortSignal.timeout(10_000));
    expect(flaky).toBe(3);
  });

  it("fails with the last answer when the window ends", async () => {
    await expect(runHealthChecks({ http: `${base}/broken` }, undefined, AbortSignal.timeout(1_500))).rejects.toThrow(`health URL ${base}/broken did not pass: HTTP 500`);
    await expect(runHealthChecks({ command: "exit 3" }, undefined, AbortSignal.timeout(1_500))).rejects.toThrow(/health command "exit 3" did not pass: exit 3/);
  });
});
