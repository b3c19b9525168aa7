/**
 * Controlling a NixOS release end to end: a real agent switched to a real (test) system from
 * the coordinator's cache restarts and stops the systemd units the release declares. systemctl
 * is the machine's, not Flotilla's: here a script first on PATH that records its arguments.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "@flotilla/protocol/testing";
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { Sandbox } from "./support/sandbox.ts";
import { buildSystem, nixEnv } from "./support/nix.ts";
import { bundleAgent, signedFleet, waitForEnd } from "./support/releases.ts";

let sb: Sandbox;
let bin: string;
let calls: string;
const savedPath = process.env.PATH;
beforeAll(async () => {
  process.env.NIX_CONFIG = nixEnv.NIX_CONFIG;
  bin = await mkdtemp(join(tmpdir(), "flotilla-systemctl-"));
  calls = join(bin, "calls.log");
  await writeFile(join(bin, "systemctl"), `#!/bin/sh\necho "$*" >> "${calls}"\n`, { mode: 0o755 });
  process.env.PATH = `${bin}:${savedPath}`;
});
afterAll(async () => {
  process.env.PATH = savedPath;
  await rm(bin, { recursive: true, force: true });
});
beforeEach(() => {
  sb = new Sandbox();
});
afterEach(async () => {
  await sb.cleanup();
});

const systemctlCalls = async () => (await readFile(calls, "utf8").catch(() => "")).split("\n").filter(Boolean);

it("restarts and stops the systemd units a NixOS release declares, and refuses to undeploy the system", async () => {
  const fleet = await signedFleet(sb);
  expect((await fleet.admin(["nix-key", "create", "kiosk-cache"])).code).toBe(0);
  const work = await sb.dir("flotilla-nixos-");
  await mkdir(join(work, "profiles"));
  const { name } = await bundleAgent(fleet, sb, ["--nixos-profile", join(work, "profiles", "system")]);
  await waitFor("the agent declaring release:nixos", async () =>
    (await fleet.adminJson<{ capabilities: string[] }[]>(["device", "ls"]))[0]?.capabilities.includes("release:nixos"),
  );
  const system = await buildSystem(sb, join(work, "switch.log"));
  const created = await fleet.admin(["release", "create", "--nixos", system, "--name", "kiosk", "--version", "2026.11.3", "--unit", "kiosk.service,cage.service"]);
  expect(created.code, created.stderr).toBe(0);
  expect((await fleet.admin(["device", "deploy", name, "kiosk@2026.11.3"])).code).toBe(0);
  expect((await waitForEnd(fleet, name, "kiosk/1/kiosk.nixos.json", 120_000)).at(-1)).toMatchObject({ step: "healthy" });

  const reported = (state: string) =>
    waitFor(`kiosk ${state}`, async () => {
      const show = await fleet.adminJson<{ releases: { name: string; control: { reported: { state: string } | null } | null }[] }>(["device", "show", name]);
      return show.releases[0]?.control?.reported?.state === state;
    }, 30_000, 200);
  expect((await fleet.admin(["device", "restart", name, "kiosk"])).code).toBe(0);
  await reported("restarted");
  expect((await fleet.admin(["device", "stop", name, "kiosk"])).code).toBe(0);
  await reported("stopped");
  expect(await systemctlCalls()).toEqual(["restart -- kiosk.service cage.service", "stop -- kiosk.service cage.service"]);
  expect((await fleet.admin(["device", "show", name])).stdout).toMatch(/^ {2}kiosk: stopped \(by /m);

  const undeploy = await fleet.admin(["device", "undeploy", name, "kiosk"]);
  expect(undeploy.code).toBe(1);
  expect(undeploy.stderr).toBe("error: kiosk is a NixOS system, which cannot be undeployed: deploy another system instead\n");
});
