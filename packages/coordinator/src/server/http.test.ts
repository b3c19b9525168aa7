import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { StoreConflictError } from "../store/errors.ts";
import { answerFailure, checkMethod } from "./http.ts";

describe("plain-HTTP failures", () => {
  let server: http.Server | undefined;
  afterEach(() => new Promise<void>((done) => (server ? server.close(() => done()) : done())));

  async function answer(fail: (req: http.IncomingMessage) => unknown, format: "json" | "text", reported: unknown[] = []) {
    server = http.createServer((req, res) => {
      try {
        fail(req);
      } catch (err) {
        answerFailure(res, err, format, (e) => reported.push(e));
      }
    });
    await new Promise<void>((done) => server!.listen(0, "127.0.0.1", done));
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    return { status: res.status, allow: res.headers.get("allow"), type: res.headers.get("content-type"), body: await res.text() };
  }

  it("answers a store conflict with 409 and its message", async () => {
    const reported: unknown[] = [];
    expect(await answer(() => {
          throw new StoreConflictError("organization name acme");
        }, "json", reported)).toMatchObject({ status: 409, body: '{"error":"organization name acme already exists"}' });
    expect(reported).toEqual([]);
  });

  it("answers a wrong method with 405, the methods allowed, and a text line", async () => {
    expect(await answer((req) => checkMethod(req, ["POST", "PUT"]), "text")).toEqual({ status: 405, allow: "POST, PUT", type: "text/plain; charset=utf-8", body: "use POST or PUT\n" });
  });

  it("reports anything unexpected and answers 500 without its details", async () => {
    const reported: unknown[] = [];
    expect(await answer(() => {
          throw new Error("disk on fire");
        }, "json", reported)).toMatchObject({ status: 500, body: '{"error":"internal error"}' });
    expect(reported).toHaveLength(1);
  });
});
