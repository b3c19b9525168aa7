import { describe, expect, it } from "vitest";
import { EOF, FrameQueue } from "./frame-queue.ts";

const chunk = (n: number) => ({ kind: "data" as const, data: new Uint8Array(n) });

describe("FrameQueue", () => {
  it("holds a pusher back until the receiver releases what it took", async () => {
    const q = new FrameQueue(100, new AbortController().signal);
    await q.push(chunk(60));
    await q.push(chunk(60));
    let third = false;
    const pushed = q.push(chunk(60)).then(() => (third = true));
    await new Promise((r) => setImmediate(r));
    expect(third).toBe(false);
    expect(q.heldBytes).toBe(120);
    const f = await q.pull();
    await new Promise((r) => setImmediate(r));
    expect(third).toBe(false); // pulled but not yet written onward: still held
    q.release(f);
    await pushed;
    expect(q.heldBytes).toBe(120);
  });

  it("hands frames over in order, eof last", async () => {
    const q = new FrameQueue(1000, new AbortController().signal);
    await q.push(chunk(1));
    await q.push(chunk(2));
    await q.push(EOF);
    const kinds = [];
    for (let i = 0; i < 3; i++) {
      const f = await q.pull();
      kinds.push(f.kind === "data" ? f.data.length : "eof");
      q.release(f);
    }
    expect(kinds).toEqual([1, 2, "eof"]);
  });

  it("rejects waiting pushes and pulls with the reason once the tunnel is aborted", async () => {
    const ac = new AbortController();
    let gauge = 0;
    const q = new FrameQueue(10, ac.signal, (d) => (gauge += d));
    await q.push(chunk(10));
    const push = q.push(chunk(10));
    const empty = new FrameQueue(10, ac.signal);
    const pull = empty.pull();
    ac.abort(new Error("gone"));
    await expect(push).rejects.toThrow("gone");
    await expect(pull).rejects.toThrow("gone");
    q.drop();
    expect(gauge).toBe(0);
  });
});
