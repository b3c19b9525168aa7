import { describe, expect, it } from "vitest";
import { onAbort } from "./wakeup.ts";

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
