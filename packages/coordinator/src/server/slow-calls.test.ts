import { Code, ConnectError, createContextValues, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import type { Logger } from "@flotilla/protocol";
import { describe, expect, it } from "vitest";
import { arrivedAtKey, SlowCalls } from "./slow-calls.ts";

function recorder() {
  const lines: { msg: string; fields: Record<string, unknown> }[] = [];
  const log: Logger = {
    info: () => {},
    warn: (msg, fields = {}) => lines.push({ msg, fields }),
    error: () => {},
    child: () => log,
  };
  return { log, lines };
}

/** A unary request to `service/method` that reached Connect `waitedMs` ago. */
function request(service: string, method: string, waitedMs: number): UnaryRequest {
  return {
    stream: false,
    service: { typeName: service },
    method: { name: method },
    contextValues: createContextValues().set(arrivedAtKey, performance.now() - waitedMs),
  } as unknown as UnaryRequest;
}

const answered = async () => ({ stream: false }) as unknown as UnaryResponse;

describe("slow calls", () => {
  it("sums the calls slower than the threshold in one line, slowest method first, with the time before the handler", async () => {
    const { log, lines } = recorder();
    const slow = new SlowCalls(log, 2000);
    const call = slow.interceptor()(answered);
    await call(request("flotilla.admin.v1.RolloutService", "GetRollout", 31_000));
    await call(request("flotilla.admin.v1.RolloutService", "GetRollout", 2500));
    await call(request("flotilla.admin.v1.AdminService", "ListDevices", 4000));
    // Fast calls are not counted.
    await call(request("flotilla.admin.v1.AdminService", "ListDevices", 10));
    const refusing = slow.interceptor()(async () => {
      throw new ConnectError("busy", Code.Unavailable);
    });
    await expect(refusing(request("flotilla.agent.v1.AgentService", "Report", 3000))).rejects.toThrow("busy");
    slow.close();
    expect(lines).toHaveLength(1);
    expect(lines[0]!.msg).toBe("slow calls");
    expect(lines[0]!.fields.calls).toBe(4);
    const slowest = String(lines[0]!.fields.slowest).split("; ");
    expect(slowest).toHaveLength(3);
    expect(slowest[0]).toMatch(/^RolloutService\/GetRollout 310\d\d ms \(310\d\d ms before the handler, ok, 2 slow\)$/);
    expect(slowest[1]).toMatch(/^AdminService\/ListDevices 4\d\d\d ms \(4\d\d\d ms before the handler, ok, 1 slow\)$/);
    expect(slowest[2]).toMatch(/^AgentService\/Report 3\d\d\d ms \(3\d\d\d ms before the handler, unavailable, 1 slow\)$/);
  });

  it("logs nothing when no call was slow, and leaves streams alone", async () => {
    const { log, lines } = recorder();
    const slow = new SlowCalls(log, 2000);
    await slow.interceptor()(answered)(request("flotilla.admin.v1.AdminService", "ListDevices", 5));
    const stream = { ...request("flotilla.agent.v1.AgentService", "Watch", 60_000), stream: true } as unknown as UnaryRequest;
    await slow.interceptor()(answered)(stream);
    slow.close();
    expect(lines).toEqual([]);
  });
});
