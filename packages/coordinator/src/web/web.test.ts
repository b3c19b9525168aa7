/**
 * The web console's HTTP face: cache headers, the Content-Security-Policy, client routes, what it
 * leaves to other routes (RPCs, tools' GETs), path traversal, and the page shown without a build.
 */
import { createServer, type Server } from "node:http";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@flotilla/protocol";
import { tempDir } from "@flotilla/protocol/testing";
import { CONTENT_SECURITY_POLICY, webConsoleHandler } from "./index.ts";

async function serve(dir: string): Promise<{ url: string; server: Server }> {
  const handle = webConsoleHandler({ log: silentLogger }, dir);
  const server = createServer((req, res) => {
    if (!handle(req, res)) res.writeHead(418).end("not mine");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  return { url: `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`, server };
}

describe("web console", () => {
  let built: { url: string; server: Server };
  let empty: { url: string; server: Server };
  beforeAll(async () => {
    const dir = await tempDir("flotilla-web-");
    await mkdir(join(dir, "assets"));
    await writeFile(join(dir, "index.html"), '<!doctype html><script type="module" src="/assets/index-abc123.js"></script>');
    await writeFile(join(dir, "assets/index-abc123.js"), "console.log(1)");
    await writeFile(join(dir, "secret.txt"), "not an asset");
    built = await serve(dir);
    empty = await serve(join(dir, "missing"));
  });
  afterAll(() => {
    built.server.close();
    empty.server.close();
  });

  it("serves index.html uncached and hashed assets for a year, both under a strict CSP", async () => {
    const index = await fetch(`${built.url}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("cache-control")).toBe("no-cache");
    expect(index.headers.get("content-type")).toMatch(/^text\/html/);
    expect(index.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
    expect(CONTENT_SECURITY_POLICY).toContain("script-src 'self'");
    expect(CONTENT_SECURITY_POLICY).toContain("connect-src 'self'");
    expect(CONTENT_SECURITY_POLICY).not.toContain("unsafe-inline");
    const asset = await fetch(`${built.url}/assets/index-abc123.js`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(asset.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect(asset.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
    expect((await fetch(`${built.url}/assets/index-nothere.js`)).status).toBe(404);
  });

  it("answers a browser's client route with index.html and leaves RPCs and tools' GETs alone", async () => {
    const page = await fetch(`${built.url}/devices/dev_123`, { headers: { accept: "text/html,application/xhtml+xml" } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("/assets/index-abc123.js");
    expect((await fetch(`${built.url}/flotilla.admin.v1.AdminService/ListDevices`, { method: "POST" })).status).toBe(418);
    expect((await fetch(`${built.url}/flotilla.admin.v1.AdminService/ListDevices`, { headers: { accept: "text/html" } })).status).toBe(418);
    expect((await fetch(`${built.url}/metrics`, { headers: { accept: "text/plain" } })).status).toBe(418);
    expect((await fetch(`${built.url}/`, { method: "POST" })).status).toBe(418);
  });

  it("serves nothing outside assets/ (path traversal)", async () => {
    for (const path of ["/assets/..%2Fsecret.txt", "/assets/%2e%2e/secret.txt", "/assets/../secret.txt"]) {
      const res = await fetch(`${built.url}${path}`);
      expect(await res.text()).not.toContain("not an asset");
    }
  });

  it("says how to build the console when it is not built", async () => {
    const res = await fetch(`${empty.url}/`);
    expect(res.status).toBe(503);
    expect(await res.text()).toContain("npm run build");
  });
});
