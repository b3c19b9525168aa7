/**
 * A coordinator that stalls (SIGSTOP: a GC pause, a frozen VM, an overloaded host) is normal
 * weather: agents stay alive through it and come back online when it resumes. Before the
 * transport kept an error listener on every HTTP/2 session, the agent died here of an unhandled
 * 'error' event ("PING timed out").
 */
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sandbox = useSandbox();

describe("a stalled coordinator", () => {
  it("leaves agents alive, and they are online again within 30 s of it resuming", async () => {
    const fleet = await new Fleet(sandbox).start();
    const join = await fleet.joinToken(["--auto-approve", "--uses", "2"]);
    // The default Watch time-out (60 s), so the HTTP/2 keep-alive ping is what notices the stall.
    const agents = [0, 1].map(async (i) => fleet.startAgent(await sandbox.dir(), join, ["--watch-timeout-ms", "60000"], `agent-${i}`));
    const [a, b] = await Promise.all(agents);
    await waitFor("both agents online", async () => (await fleet.devices()).filter((d) => d.status === "online").length === 2, 30_000);

    fleet.coordinator.child.kill("SIGSTOP");
    const stalledAt = Date.now();
    // The stall lasts 30 s: longer than the agents' HTTP/2 ping time-out (10 s + 10 s).
    await waitFor("the agents to notice the stall", () => /PING timed out/.test(a!.output + b!.output), 40_000, 250);
    await waitFor("30 s of stall", () => Date.now() - stalledAt >= 30_000, 40_000, 250);
    fleet.coordinator.child.kill("SIGCONT");
    const resumedAt = Date.now();

    await waitFor("both agents online again", async () => {
      const d = await fleet.devices();
      return d.length === 2 && d.every((x) => x.status === "online");
    }, 30_000, 250);
    expect(Date.now() - resumedAt).toBeLessThan(30_000);
    expect(a!.exitCode).toBeNull();
    expect(b!.exitCode).toBeNull();
  }, 120_000);
});
