/**
 * A coordinator whose address refuses connections (down for maintenance, a firewall in the
 * way): agents keep trying with jittered backoff, go offline, and come back on their own as soon
 * as connections are accepted again.
 */
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { useProxiedFleet } from "./support/faults.ts";

describe("connections refused", () => {
  const f = useProxiedFleet();

  it("keeps agents alive and retrying, and they are back online once connections are accepted", async () => {
    const { fleet, proxy, sandbox } = f;
    const agent = fleet.startAgent(await sandbox.dir(), await fleet.joinToken(["--auto-approve"]));
    await waitFor("the agent online", async () => (await fleet.devices())[0]?.status === "online", 30_000, 250);

    await proxy.set("refuse");
    proxy.resetAll();
    await waitFor("the device offline", async () => (await fleet.devices())[0]?.status === "offline", 30_000, 250);
    await waitFor("the agent to have retried", () => (agent.output.match(/connection to coordinator lost/g) ?? []).length >= 3, 30_000, 250);
    expect(agent.exitCode).toBeNull();

    const acceptedBefore = proxy.accepted;
    await proxy.set("pass");
    const backAt = Date.now();
    await waitFor("the agent online again", async () => (await fleet.devices())[0]?.status === "online", 30_000, 250);
    // Back within its longest backoff (1 s here) and a connection or two, not a burst of them.
    expect(Date.now() - backAt).toBeLessThan(15_000);
    expect(proxy.accepted - acceptedBefore).toBeLessThan(5);
    expect(agent.output).toMatch(/ECONNREFUSED/);
  }, 120_000);
});
