/**
 * A coordinator that stalls (SIGSTOP: a GC pause, a frozen VM, an overloaded host) is normal
 * weather: agents stay alive through it and come back online when it resumes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "@flotilla/protocol/testing";
import { Fleet } from "./support/fleet.ts";
import { Sandbox } from "./support/sandbox.ts";

describe("a stalled coordinator", () => {
  const sandbox = new Sandbox();
  let fleet: Fleet;

  beforeAll(async () => {
    fleet = await new Fleet(sandbox).start();
  });
  afterAll(() => sandbox.cleanup());

  it("leaves agents alive, and they are online again within 30 s of it resuming", async () => {
    const join = await fleet.joinToken(["--auto-approve"]);
    // The default Watch time-out (60 s), so the HTTP/2 keep-alive ping is what notices the stall.
    const agent = fleet.startAgent(await sandbox.dir(), join, ["--watch-timeout-ms", "60000"]);
    await waitFor("the agent online", async () => (await fleet.device(await hostnameOf(agent)))?.status === "online", 30_000);
    fleet.coordinator.child.kill("SIGSTOP");
    const stalledAt = Date.now();
    // The stall lasts 30 s: longer than the agents' HTTP/2 ping time-out and their Watch time-out.
    await waitFor("30 s of stall", () => agent.exitCode !== null || Date.now() - stalledAt >= 30_000, 40_000, 250);
    console.log(agent.output);
    fleet.coordinator.child.kill("SIGCONT");
    expect(agent.exitCode).toBeNull();
    await waitFor("the agent online again", async () => (await fleet.devices()).every((d) => d.status === "online"), 30_000, 500);
    expect(agent.exitCode).toBeNull();
    expect(agent.output).not.toMatch(/Unhandled 'error' event|uncaught|UnhandledPromiseRejection/i);
  }, 120_000);
});

async function hostnameOf(_agent: unknown): Promise<string> {
  const { hostname } = await import("node:os");
  return hostname();
}
