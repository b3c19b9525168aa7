import { gzipSync } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import { agentv1 } from "@flotilla/protocol";
import { describe, expect, it } from "vitest";
import { inflate, MAX_INFLATED } from "./validate.ts";

const GZIP = agentv1.Compression.GZIP;

/** Counts event-loop turns (one setImmediate each) until `p` settles. */
async function turnsWhile<T>(p: () => Promise<T>): Promise<{ turns: number; result: PromiseSettledResult<T> }> {
  let turns = 0;
  let done = false;
  const spin = () => {
    if (done) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  const [result] = await Promise.allSettled([p()]);
  done = true;
  return { turns, result: result! };
}

describe("inflate", () => {
  it("lets the event loop run other callbacks while a batch decompresses", async () => {
    const size = 32 * 1024 * 1024;
    const payload = gzipSync(Buffer.alloc(size, "a"));
    const { turns, result } = await turnsWhile(async () => inflate(GZIP, payload));
    expect(result.status).toBe("fulfilled");
    expect((result as PromiseFulfilledResult<Uint8Array>).value.length).toBe(size);
    // Synchronous decompression lets no other callback run until it is done: 0 turns.
    expect(turns).toBeGreaterThanOrEqual(10);
  });

  it("refuses a gzip bomb with ResourceExhausted once its output passes the limit, without blocking the loop", async () => {
    // 16 gzip members of 64 MiB of zeros each: 1 GiB once inflated, about 1 MiB on the wire.
    const member = gzipSync(Buffer.alloc(64 * 1024 * 1024));
    const bomb = Buffer.concat(Array.from({ length: 16 }, () => member));
    const { turns, result } = await turnsWhile(async () => inflate(GZIP, bomb));
    expect(result.status).toBe("rejected");
    const err = ConnectError.from((result as PromiseRejectedResult).reason);
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toBe(`payload inflates beyond ${MAX_INFLATED} bytes`);
    expect(turns).toBeGreaterThanOrEqual(10);
  });

  it("inflates an idle device's small batch at once, without a trip through the thread pool", async () => {
    const line = "INFO request handled method=GET path=/api/items/1 status=200\n".repeat(5);
    const { turns, result } = await turnsWhile(async () => inflate(GZIP, gzipSync(line)));
    expect(result.status).toBe("fulfilled");
    expect(Buffer.from((result as PromiseFulfilledResult<Uint8Array>).value).toString()).toBe(line);
    expect(turns).toBe(0);
  });

  it("refuses what is not gzip, and unknown compressions, with InvalidArgument", async () => {
    await expect(async () => inflate(GZIP, Buffer.from("not gzip"))).rejects.toThrow(/not valid gzip/);
    await expect(async () => inflate(GZIP, Buffer.alloc(100 * 1024, 7))).rejects.toThrow(/not valid gzip/);
    await expect(async () => inflate(99 as agentv1.Compression, Buffer.from("x"))).rejects.toThrow(/unknown compression/);
    expect(Buffer.from(await inflate(agentv1.Compression.UNSPECIFIED, Buffer.from("plain"))).toString()).toBe("plain");
  });
});
