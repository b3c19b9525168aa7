/**
 * A slow, far link (500 ms each way, 1 MB/s): a 20 MB release still downloads, verifies and
 * activates, and the agent's keep-alives do not mistake the slow link for a dead one.
 */
import { describe, expect, it } from "vitest";
import { useProxiedFleet } from "./support/faults.ts";
import { freePort } from "@flotilla/protocol/testing";
import { bundleAgent, bundleTarball, createRelease, served, serverFlags, waitForEnd } from "./support/releases.ts";

describe("a slow link with high latency", () => {
  const f = useProxiedFleet();

  it("downloads and activates a 20 MB release at 1 MB/s with 500 ms latency", async () => {
    const { fleet, proxy, sandbox } = f;
    const { agent, name } = await bundleAgent(fleet, sandbox);
    proxy.latencyMs = 500;
    proxy.bytesPerSecond = 1024 * 1024;
    const port = await freePort();
    const { path } = await bundleTarball(await sandbox.dir(), "app.tar.gz", { port, padding: 20 * 1024 * 1024 });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    expect((await fleet.admin(["device", "deploy", name, "app@1.0.0"])).code).toBe(0);

    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz", 120_000);
    expect(steps.at(-1)!.step).toBe("healthy");
    expect(steps.filter((s) => s.step === "activating")).toHaveLength(1);
    expect(await served(port)).toBe("1.0.0");
    expect(agent.exitCode).toBeNull();
    expect(agent.output).not.toMatch(/PING timed out/);
  }, 180_000);
});
