import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { onAbort, Wakeup } from "./wakeup.ts";

describe("onAbort", () => {
  it("calls at once for a signal that has already aborted", () => {
    const calls: string[] = [];
    onAbort(AbortSignal.abort(), () => calls.push("stop"));
    expect(calls).toEqual(["stop"]);
  });

  it("calls once when the signal aborts later, and not at all once removed", () => {
    const calls: string[] = [];
    const a = new AbortController();
    onAbort(a.signal, () => calls.push("a"));
    const b = new AbortController();
    const unlisten = onAbort(b.signal, () => calls.push("b"));
    expect(calls).toEqual([]);
    a.abort();
    a.abort();
    unlisten();
    b.abort();
    expect(calls).toEqual(["a"]);
  });
});

describe("Wakeup", () => {
  it("keeps a notify that came before the wait", async () => {
    const w = new Wakeup();
    w.notify();
    await w.wait(new AbortController().signal);
  });

  it("leaves no abort listener behind when a loop races it against another and the other wins, round after round", async () => {
    const signal = new AbortController().signal;
    const work = new Wakeup();
    const connection = new Wakeup();
    for (let round = 0; round < 50; round++) {
      const raced = Promise.race([work.wait(signal), connection.wait(signal)]);
      work.notify();
      await raced;
    }
    // The pending loser of the last round, and nothing of the 49 before it.
    expect(getEventListeners(signal, "abort")).toHaveLength(1);
  });

  it("ends the wait it replaces at once, without consuming a notify meant for the new one", async () => {
    const signal = new AbortController().signal;
    const w = new Wakeup();
    let firstDone = false;
    const first = w.wait(signal).then(() => (firstDone = true));
    const second = w.wait(signal);
    await first;
    expect(firstDone).toBe(true);
    let secondDone = false;
    void second.then(() => (secondDone = true));
    await Promise.resolve();
    expect(secondDone).toBe(false);
    w.notify();
    await second;
    expect(getEventListeners(signal, "abort")).toHaveLength(0);
  });
});
