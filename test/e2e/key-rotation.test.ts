/**
 * Rotating the coordinator's own key: agents and admins follow an endorsed rotation by
 * themselves, over TLS and over plain HTTP, and refuse a key nobody endorsed.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

/** A fleet whose coordinator listens on every address, so it speaks TLS with its own key. */
async function tlsFleet(): Promise<Fleet> {
  const fleet = await new Fleet(sb).prepare();
  await startTls(fleet);
  await fleet.loginAsOwner();
  return fleet;
}

async function startTls(fleet: Fleet): Promise<void> {
  fleet.coordinator = sb.spawn(
    ["coordinator", "--data-dir", fleet.dataDir, "--listen", `0.0.0.0:${fleet.port}`, "--public-url", `https://127.0.0.1:${fleet.port}`, "--keepalive-ms", "500", "--offline-after-ms", "2000"],
    {},
    "coordinator",
  );
  await fleet.coordinator.waitForOutput(/listening on (\S+)/);
  fleet.url = `https://127.0.0.1:${fleet.port}`;
}

const pinOf = async (stateDir: string) => (JSON.parse(await readFile(join(stateDir, "enrollment.json"), "utf8")) as { pin: string }).pin;
const adminPin = async (fleet: Fleet) =>
  (JSON.parse(await readFile(join(fleet.adminHome, "context.json"), "utf8")) as { coordinators: Record<string, { pin: string }> }).coordinators[fleet.url]!.pin;

async function coordinatorPin(fleet: Fleet): Promise<string> {
  const r = await sb.run(["id", "--data-dir", fleet.dataDir, "--pin"]);
  return r.stdout.trim();
}

describe("rotating the coordinator's key", () => {
  it("is followed over TLS by agents and admins without re-enrolling, and re-pinned", async () => {
    const fleet = await tlsFleet();
    const stateDir = await sb.dir("flotilla-agent-");
    const agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]));
    const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    const oldPin = await pinOf(stateDir);

    await fleet.coordinator.stop();
    const rotated = await sb.run(["coordinator", "rotate-key", "--data-dir", fleet.dataDir]);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stdout).toMatch(/coordinator key rotated/);
    await startTls(fleet);
    const newPin = await coordinatorPin(fleet);
    expect(newPin).not.toBe(oldPin);

    // The same agent process reconnects to the new key and re-pins it on disk.
    await waitFor("the agent re-pinned", async () => (await pinOf(stateDir)) === newPin, 30_000);
    await waitFor("the device online again", async () => (await fleet.device(device.name))?.status === "online", 30_000);
    expect(agent.exitCode).toBeNull();
    // Admins follow too: their next command logs in, checks the endorsement and re-pins.
    const ls = await fleet.admin(["device", "ls", "--json"]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(await adminPin(fleet)).toBe(newPin);
  });

  it("is followed over plain HTTP, across two rotations while the agent was stopped", async () => {
    const fleet = await new Fleet(sb).start();
    const stateDir = await sb.dir("flotilla-agent-");
    let agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]));
    const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    await agent.stop();
    await fleet.coordinator.stop();
    for (let i = 0; i < 2; i++) expect((await sb.run(["coordinator", "rotate-key", "--data-dir", fleet.dataDir])).code).toBe(0);
    await fleet.startCoordinator();

    agent = fleet.startAgent(stateDir);
    await waitFor("the device online after two rotations", async () => (await fleet.device(device.name))?.status === "online", 30_000);
    expect(await pinOf(stateDir)).toBe(await coordinatorPin(fleet));
  });

  it("is refused by agents when the new key carries no endorsement from the pinned one", async () => {
    const fleet = await new Fleet(sb).start();
    const stateDir = await sb.dir("flotilla-agent-");
    const agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]));
    const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    const oldPin = await pinOf(stateDir);

    await fleet.coordinator.stop();
    // An impostor: a new key, and the endorsement file of a rotation removed.
    expect((await sb.run(["coordinator", "rotate-key", "--data-dir", fleet.dataDir])).code).toBe(0);
    await writeFile(join(fleet.dataDir, "key-endorsements.json"), "[]\n");
    await fleet.startCoordinator();

    await agent.waitForOutput(/does not match the pinned key/, 30_000);
    expect(await pinOf(stateDir)).toBe(oldPin);
    expect((await fleet.device(device.name))?.status).not.toBe("online");
  });
});
