import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { RecordedEvents } from "../bundle/testing/fixtures.ts";
import { NixosActivator } from "./nixos-activator.ts";

const tmp = useTempDir("flotilla-nixos-control-");

/** An activator whose systemctl is a script that records its arguments and exits with `code`. */
async function setup(installed: object | undefined, code = 0): Promise<{ activator: NixosActivator; calls: () => Promise<string[]> }> {
  const log = join(tmp.path, "systemctl.log");
  const systemctl = join(tmp.path, "systemctl");
  await writeFile(systemctl, `#!/bin/sh\necho "$*" >> "${log}"\necho "unit trouble" >&2\nexit ${code}\n`, { mode: 0o755 });
  if (installed) await writeFile(join(tmp.path, "nixos-installed.json"), JSON.stringify(installed));
  const activator = new NixosActivator({ stateDir: tmp.path, cacheUrl: "http://127.0.0.1:1", trustedPublicKeys: () => [], token: () => "", systemctl });
  const calls = async () => (await readFile(log, "utf8").catch(() => "")).split("\n").filter(Boolean);
  return { activator, calls };
}

const kiosk = { name: "kiosk", version: "2026.11.1", counter: 1, sha256: "a".repeat(64), storePath: "/nix/store/x", units: ["kiosk.service", "cage.service"] };

describe("NixOS release control", () => {
  it("restarts, stops and starts the systemd units the installed release declares", async () => {
    const { activator, calls } = await setup(kiosk);
    const events = new RecordedEvents();
    for (const action of ["restart", "stop", "start"] as const) await activator.control("kiosk", action, { purgeData: false }, events);
    expect(await calls()).toEqual(["restart -- kiosk.service cage.service", "stop -- kiosk.service cage.service", "start -- kiosk.service cage.service"]);
  });

  it("says why when it cannot: no units declared, another release, systemctl failing, undeploying the system", async () => {
    const events = new RecordedEvents();
    const bare = await setup({ ...kiosk, units: undefined });
    await expect(bare.activator.control("kiosk", "restart", { purgeData: false }, events)).rejects.toThrow("kiosk 2026.11.1 declares no systemd units to restart (release create --unit)");
    await expect(bare.activator.control("webapp", "stop", { purgeData: false }, events)).rejects.toThrow("no webapp release is installed");
    await bare.activator.control("webapp", "remove", { purgeData: false }, events);
    await expect(bare.activator.control("kiosk", "remove", { purgeData: false }, events)).rejects.toThrow("cannot be undeployed");
    const failing = await setup(kiosk, 5);
    await expect(failing.activator.control("kiosk", "stop", { purgeData: false }, events)).rejects.toThrow("systemctl stop kiosk.service cage.service exited with 5: unit trouble");
  });
});
