/**
 * Agent sessions expire (`--session-ttl-ms`); an agent whose session ran out while its Watch
 * stream stayed open must open a new one and go on delivering what it owes the coordinator.
 */
import { waitFor } from "@flotilla/protocol/testing";
import { expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

it("keeps reporting after its session expired, by authenticating again", async () => {
  const ttlMs = 1500;
  const fleet = await new Fleet(sb, ["--session-ttl-ms", String(ttlMs)]).start();
  fleet.startAgent(await sb.dir("flotilla-agent-"), await fleet.joinToken(["--auto-approve"]));
  const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
  // The condition under test is time itself: the session the agent opened has expired.
  const expired = Date.now() + ttlMs + 500;
  await waitFor("the agent's session to expire", () => Date.now() > expired);

  expect((await fleet.admin(["device", "label", "set", device.name, "after=expiry"])).code).toBe(0);
  const applied = await waitFor("the label applied and reported", async () => {
    const d = await fleet.device(device.name);
    return d && d.labels.after === "expiry" && d.observedGeneration === d.generation ? d : undefined;
  });
  expect(applied.status).toBe("online");
});
