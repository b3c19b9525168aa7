import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { drained } from "./tunnel-stream.ts";

describe("drained", () => {
  it("resolves once a full stream drains, and leaves no listeners behind", async () => {
    const w = new PassThrough({ highWaterMark: 4 });
    expect(w.write(Buffer.alloc(16))).toBe(false);
    let done = false;
    const wait = drained(w).then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    w.read();
    await wait;
    expect(w.listenerCount("drain") + w.listenerCount("close") + w.listenerCount("error")).toBe(0);
  });

  it("resolves when the stream is destroyed instead of draining, also with an error", async () => {
    for (const err of [undefined, new Error("reset")]) {
      const w = new PassThrough({ highWaterMark: 4 });
      w.on("error", () => {});
      w.write(Buffer.alloc(16));
      const wait = drained(w);
      w.destroy(err);
      await wait;
    }
  });
});
