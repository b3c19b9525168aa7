/**
 * A NixOS release end to end, as a user does it: build a system, `release create --nixos`,
 * `device deploy`, and a real agent switches its profile and runs switch-to-configuration.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, realpath } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { Sandbox, waitFor } from "./harness.ts";
import { closure, deleteFromStore, buildSystem, nixEnv } from "./nix-support.ts";
import { bundleAgent, signedFleet, waitForEnd } from "./releases-harness.ts";

let sb: Sandbox;
beforeAll(() => {
  // The agents and CLIs this file starts run nix single-user, without build users or substituters.
  process.env.NIX_CONFIG = nixEnv.NIX_CONFIG;
});
beforeEach(() => {
  sb = new Sandbox();
});
afterEach(async () => {
  await sb.cleanup();
});

it("releases a NixOS system with `release create --nixos`, and the agent switches to it from the coordinator's cache", async () => {
  const fleet = await signedFleet(sb);
  const key = await fleet.admin(["nix-key", "create", "kiosk-cache"]);
  expect(key.code, key.stderr).toBe(0);
  const work = await sb.dir("flotilla-nixos-");
  const log = join(work, "switch.log");
  const profile = join(work, "profiles", "system");
  await mkdir(join(work, "profiles"));
  const { name } = await bundleAgent(fleet, sb, ["--nixos-profile", profile, "--nixos-switch-timeout-ms", "30000"]);
  await waitFor("the agent declaring release:nixos", async () =>
    (await fleet.adminJson<{ capabilities: string[] }[]>(["device", "ls"]))[0]?.capabilities.includes("release:nixos"),
  );

  const system = await buildSystem(sb, log);
  const created = await fleet.admin(["release", "create", "--nixos", system, "--name", "kiosk", "--version", "2026.11.3"]);
  expect(created.code, created.stderr).toBe(0);
  // The device must fetch the closure from the coordinator's cache, checking its signatures.
  await deleteFromStore(await closure(system));
  expect(existsSync(system)).toBe(false);

  const deploy = await fleet.admin(["device", "deploy", name, "kiosk@2026.11.3"]);
  expect(deploy.code, deploy.stderr).toBe(0);
  const steps = await waitForEnd(fleet, name, "kiosk/1/kiosk.nixos.json", 120_000);
  expect(steps.at(-1), JSON.stringify(steps)).toMatchObject({ step: "healthy" });
  expect(await realpath(profile)).toBe(system);
  expect((await readFile(log, "utf8")).trim().split("\n")).toEqual([`${system} switch`]);
});
