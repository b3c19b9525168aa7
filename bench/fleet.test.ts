import { Code, ConnectError, createContextValues, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import { createLogger } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { createServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { LoadShedder } from "../packages/coordinator/src/server/load-shedding.ts";
import { arrivedAtKey, SlowCalls } from "../packages/coordinator/src/server/slow-calls.ts";
import { maxShedLagMs, pingProbe, slowestAdminCalls } from "./fleet.ts";

const request = (service: string, method: string, waitedMs: number) =>
  ({
    stream: false,
    service: { typeName: service },
    method: { name: method },
    contextValues: createContextValues().set(arrivedAtKey, performance.now() - waitedMs),
  }) as unknown as UnaryRequest;

describe("the fleet benchmark's reading of the coordinator's slow calls", () => {
  it("finds the slowest ListDevices and GetRollout in the lines the coordinator writes, across lines", async () => {
    let output = "";
    const slow = new SlowCalls(createLogger({ role: "coordinator" }, (line) => (output += line)), 2000);
    const ok = slow.interceptor()(async () => ({ stream: false }) as unknown as UnaryResponse);
    const refused = slow.interceptor()(async () => {
      throw new ConnectError("busy", Code.Unavailable);
    });
    await ok(request("flotilla.admin.v1.RolloutService", "GetRollout", 9000));
    await expect(refused(request("flotilla.agent.v1.AgentService", "Report", 20_000))).rejects.toThrow("busy");
    slow.close(); // writes the first line
    await ok(request("flotilla.admin.v1.RolloutService", "GetRollout", 31_000));
    await ok(request("flotilla.admin.v1.AdminService", "ListDevices", 3000));
    slow.close(); // and the second
    expect(output.trim().split("\n")).toHaveLength(2);
    const found = slowestAdminCalls(output);
    expect(found).toHaveLength(2);
    expect(found[0]).toMatch(/^RolloutService\/GetRollout 310\d\d ms \(310\d\d ms before the handler, ok, 1 slow\)$/);
    expect(found[1]).toMatch(/^AdminService\/ListDevices 3\d\d\d ms /);
    expect(slowestAdminCalls("no such lines\n")).toEqual([]);
  });
});

describe("the fleet benchmark's reading of the coordinator's load shedding", () => {
  it("finds the largest event-loop lag in the lines the load shedder writes", async () => {
    let output = "";
    const shedder = new LoadShedder({ maxCalls: 100, maxLagMs: 100, log: createLogger({ role: "coordinator" }, (line) => (output += line)) });
    try {
      const report = shedder.interceptor()(async () => ({ stream: false }) as unknown as UnaryResponse);
      // The event loop turns freely for 100 ms (the delay monitor measures from its second tick
      // on), then is stuck for 400 ms: the next Report is shed, and the shedder's next sample says
      // how late the loop was.
      await new Promise((r) => setTimeout(r, 100));
      const end = Date.now() + 400;
      while (Date.now() < end);
      await expect(report(request("flotilla.agent.v1.AgentService", "Report", 0))).rejects.toThrow("busy");
      await waitFor("the shedder's line", () => /shedding load/.test(output) || undefined, 5000, 20);
      expect(maxShedLagMs(output)).toBeGreaterThanOrEqual(300);
      expect(maxShedLagMs(output)).toBeLessThan(5000);
      expect(maxShedLagMs("no such lines\n")).toBe(0);
    } finally {
      shedder.close();
    }
  });
});

describe("the fleet benchmark's ping probe", () => {
  it("times HTTP/2 PINGs to a server, one after another, until told to stop", async () => {
    const server = createServer();
    server.on("sessionError", () => {});
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      // running() is asked before each ping: three pings, then stop.
      let asked = 0;
      const result = await pingProbe(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, () => ++asked <= 3);
      expect(result.failed).toBe(0);
      expect(result.ms).toHaveLength(3);
      for (const ms of result.ms) expect(ms).toBeGreaterThan(0);
    } finally {
      server.close();
    }
  });
});
