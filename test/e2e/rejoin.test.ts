/**
 * `flotilla agent --rejoin JOIN` end to end: an agent enrolled with one coordinator, running a
 * release, is re-homed by its machine's operator to another coordinator with that coordinator's
 * join string. It keeps its key and its installed release, trusts the new organization's root,
 * installs the new coordinator's release, and a restart with the same flag does not enroll again.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { bundleAgent, bundleDeviceOnline, bundleTarball, createRelease, served, serverFlags, signedFleet, waitForEnd } from "./support/releases.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("agent --rejoin", () => {
  it("re-homes an agent to another coordinator, keeping its installed release, and takes the new coordinator's release", async () => {
    const oldFleet = await signedFleet(sb);
    const { name, stateDir, agent } = await bundleAgent(oldFleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    await createRelease(oldFleet, (await bundleTarball(dir, "app.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    expect((await oldFleet.admin(["device", "deploy", name, "app@1.0.0"])).code).toBe(0);
    expect((await waitForEnd(oldFleet, name, "app/1/app.tar.gz")).at(-1)).toMatchObject({ step: "healthy" });
    const running = await served(port);
    const key = await readFile(join(stateDir, "agent.key"));
    await agent.stop();

    const newFleet = await signedFleet(sb);
    const joinString = await newFleet.joinToken(["--auto-approve", "--uses", "1"]);
    const rejoined = newFleet.startAgent(stateDir, undefined, ["--rejoin", joinString]);
    await rejoined.waitForOutput(/re-joined: installed releases kept/);
    const newName = await bundleDeviceOnline(newFleet);
    // The installed release runs again under the re-homed agent, as after any agent restart.
    await waitFor("the installed release serving", async () => ((await served(port)) === running ? true : undefined), 20_000, 100);
    expect(await readFile(join(stateDir, "agent.key"))).toEqual(key);
    const enrollment = JSON.parse(await readFile(join(stateDir, "enrollment.json"), "utf8")) as { url: string };
    expect(enrollment.url).toBe(newFleet.url);

    const port2 = await freePort();
    await createRelease(newFleet, (await bundleTarball(dir, "app2.tar.gz", { port: port2 })).path, "app", "2.0.0", serverFlags(port2));
    expect((await newFleet.admin(["device", "deploy", newName, "app@2.0.0"])).code).toBe(0);
    expect((await waitForEnd(newFleet, newName, "app/1/app2.tar.gz")).at(-1)).toMatchObject({ step: "healthy" });
    expect(await served(port2)).toBeDefined();

    // Restarted with the same --rejoin (a unit file that keeps the flag): no second enrollment,
    // though the join string's one use is spent.
    await rejoined.stop();
    const again = newFleet.startAgent(stateDir, undefined, ["--rejoin", joinString]);
    await again.waitForOutput(/already re-joined with this join string/);
    await bundleDeviceOnline(newFleet);
    expect((await newFleet.devices()).map((d) => d.name)).toEqual([newName]);
  });
});
