import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { healthv1 } from "@flotilla/protocol";
import { describe, expect, it } from "vitest";
import { StoreConflictError } from "../store/errors.ts";
import { storeErrorInterceptor } from "./store-errors.ts";

const conflict = () => new StoreConflictError("organization name acme");

describe("the store-error interceptor", () => {
  const client = createClient(
    healthv1.Health,
    createRouterTransport(
      (router) =>
        router.service(healthv1.Health, {
          check(req) {
            if (req.service === "race") throw conflict();
            throw new ConnectError("other", Code.NotFound);
          },
          async *watch() {
            throw conflict();
          },
        }),
      { router: { interceptors: [storeErrorInterceptor()] } },
    ),
  );

  it("answers a store conflict from a unary call with AlreadyExists and the store's message", async () => {
    const err = ConnectError.from(await client.check({ service: "race" }).catch((e: unknown) => e));
    expect(err.code).toBe(Code.AlreadyExists);
    expect(err.rawMessage).toBe("organization name acme already exists");
  });

  it("answers a store conflict raised while a server stream runs with AlreadyExists", async () => {
    const run = async () => {
      for await (const _ of client.watch({ service: "" })) void _;
    };
    expect(ConnectError.from(await run().catch((e: unknown) => e)).code).toBe(Code.AlreadyExists);
  });

  it("leaves every other error as it was", async () => {
    const err = ConnectError.from(await client.check({ service: "x" }).catch((e: unknown) => e));
    expect(err.code).toBe(Code.NotFound);
  });
});
