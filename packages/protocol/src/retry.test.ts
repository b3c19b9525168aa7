import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { retryAfterHeader, retryAfterMs, retryDelay } from "./client.ts";

const busy = (ms: string) => new ConnectError("the coordinator is busy; try again later", Code.Unavailable, { [retryAfterHeader]: ms });

describe("retry advice", () => {
  it("reads the wait a coordinator advised, and nothing from other errors", () => {
    expect(retryAfterMs(busy("1500"))).toBe(1500);
    expect(retryAfterMs(busy("nonsense"))).toBeUndefined();
    expect(retryAfterMs(busy("-5"))).toBeUndefined();
    expect(retryAfterMs(busy("99999999"))).toBe(600_000);
    expect(retryAfterMs(new Error("ECONNRESET"))).toBeUndefined();
  });

  it("waits at least the advice, with up to half of it again as jitter, and backs off as usual without it", () => {
    expect(retryDelay(busy("2000"), 0, 100, 1000, () => 0)).toBe(2000);
    expect(retryDelay(busy("2000"), 0, 100, 1000, () => 0.999)).toBe(2999);
    // Without advice: full jitter below the exponential cap.
    expect(retryDelay(new Error("x"), 3, 100, 1000, () => 0.5)).toBe(400);
    expect(retryDelay(new Error("x"), 10, 100, 1000, () => 0.5)).toBe(500);
    // Backoff longer than the advice wins.
    expect(retryDelay(busy("10"), 10, 100, 1000, () => 0.9)).toBe(900);
  });
});
