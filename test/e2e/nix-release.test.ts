/**
 * A NixOS release end to end, as a user does it: build a system, `release create --nixos`,
 * `device deploy`, and a real agent switches its profile and runs switch-to-configuration.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, realpath, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { waitFor } from "@flotilla/protocol/testing";
import { afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { Sandbox } from "./support/sandbox.ts";
import { apiToken, closure, deleteFromStore, buildSystem, hashPartOf, nixEnv, substitutePath } from "./support/nix.ts";
import { bundleAgent, signedFleet, waitForEnd } from "./support/releases.ts";

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

/**
 * A fleet with a Nix key and an agent declaring release:nixos, switching its own profile; the
 * test systems append their switches to `log`.
 */
async function nixosFleet(switchTimeoutMs: number) {
  const fleet = await signedFleet(sb);
  const key = await fleet.admin(["nix-key", "create", "kiosk-cache"]);
  expect(key.code, key.stderr).toBe(0);
  const work = await sb.dir("flotilla-nixos-");
  const log = join(work, "switch.log");
  const profile = join(work, "profiles", "system");
  await mkdir(join(work, "profiles"));
  const { name } = await bundleAgent(fleet, sb, ["--nixos-profile", profile, "--nixos-switch-timeout-ms", String(switchTimeoutMs)]);
  await waitFor("the agent declaring release:nixos", async () =>
    (await fleet.adminJson<{ capabilities: string[] }[]>(["device", "ls"]))[0]?.capabilities.includes("release:nixos"),
  );
  return { fleet, name, log, profile };
}

it("releases a NixOS system with `release create --nixos`, and the agent switches to it from the coordinator's cache", async () => {
  const { fleet, name, log, profile } = await nixosFleet(30_000);

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

it("rolls back to the previous system when the coordinator is gone right after the switch, within the confirm window", async () => {
  const { fleet, name, log, profile } = await nixosFleet(4_000);

  const good = await buildSystem(sb, log);
  expect((await fleet.admin(["release", "create", "--nixos", good, "--name", "kiosk", "--version", "1"])).code).toBe(0);
  expect((await fleet.admin(["device", "deploy", name, "kiosk@1"])).code).toBe(0);
  expect((await waitForEnd(fleet, name, "kiosk/1/kiosk.nixos.json", 120_000)).at(-1)).toMatchObject({ step: "healthy" });

  const next = await buildSystem(sb, log);
  expect((await fleet.admin(["release", "create", "--nixos", next, "--name", "kiosk", "--version", "2"])).code).toBe(0);
  // This switch takes the coordinator away (SIGKILL) before it returns: the agent cannot hear
  // from it again within the window.
  await writeFile(`${log}.kill`, String(fleet.coordinator.child.pid));
  expect((await fleet.admin(["device", "deploy", name, "kiosk@2"])).code).toBe(0);
  await fleet.coordinator.exited;

  const switches = await waitFor("the previous system switched to again", async () => {
    const lines = existsSync(log) ? (await readFile(log, "utf8")).trim().split("\n") : [];
    return lines.length >= 3 ? lines : undefined;
  }, 60_000);
  expect(switches).toEqual([`${good} switch`, `${next} switch`, `${good} switch`]);
  expect(await realpath(profile)).toBe(good);

  // Back up, the coordinator learns why from the agent's outbox.
  await writeFile(`${log}.kill`, "");
  await fleet.startCoordinator();
  const steps = await waitForEnd(fleet, name, "kiosk/2/kiosk.nixos.json", 60_000);
  expect(steps.at(-1)).toMatchObject({ step: "rolled-back", error: expect.stringMatching(/did not reach the coordinator within 4 s/) });
});

/** A released system, gone from the local store, and an attacker's token with nix:write. */
async function releasedSystem(fleet: Awaited<ReturnType<typeof nixosFleet>>["fleet"], log: string) {
  const system = await buildSystem(sb, log);
  const created = await fleet.admin(["release", "create", "--nixos", system, "--name", "kiosk", "--version", "1"]);
  expect(created.code, created.stderr).toBe(0);
  await deleteFromStore(await closure(system));
  const cacheUrl = (await fleet.admin(["nix-cache", "url"])).stdout.trim();
  return { system, cacheUrl, deployerToken: await apiToken(fleet, "deployer") };
}

const switches = async (log: string) => (existsSync(log) ? (await readFile(log, "utf8")).trim().split("\n") : []);

it("a deployer token cannot replace the NAR of a released store path: the upload is refused and the device installs the released bytes", async () => {
  const { fleet, name, log, profile } = await nixosFleet(30_000);
  const { system, cacheUrl, deployerToken } = await releasedSystem(fleet, log);

  // Other content under the released path, with a narinfo the coordinator would sign.
  const attack = await substitutePath(sb, cacheUrl, deployerToken, system, log);
  expect((await fleet.admin(["device", "deploy", name, "kiosk@1"])).code).toBe(0);
  const steps = await waitForEnd(fleet, name, "kiosk/1/kiosk.nixos.json", 120_000);

  expect(await switches(log)).toEqual([`${system} switch`]);
  expect(steps.at(-1), JSON.stringify(steps)).toMatchObject({ step: "healthy" });
  expect(await realpath(profile)).toBe(system);
  expect(attack.narinfo).toBe(409);
  expect(attack.narinfoBody).toMatch(/already in the cache with other content/);
});

it("a compromised coordinator that serves other, validly signed bytes for a released path cannot make the device switch to them", async () => {
  const { fleet, name, log, profile } = await nixosFleet(30_000);
  const { system, cacheUrl, deployerToken } = await releasedSystem(fleet, log);

  // The coordinator forgets the released narinfo, then takes and signs the attacker's with the
  // organization's key: what a coordinator under an attacker's control can serve.
  const db = new Database(join(fleet.dataDir, "flotilla.db"));
  try {
    expect(db.prepare("DELETE FROM nix_paths WHERE hash_part = ?").run(hashPartOf(system)).changes).toBe(1);
  } finally {
    db.close();
  }
  const attack = await substitutePath(sb, cacheUrl, deployerToken, system, log);
  expect(attack).toMatchObject({ nar: 200, narinfo: 200 });

  expect((await fleet.admin(["device", "deploy", name, "kiosk@1"])).code).toBe(0);
  const steps = await waitForEnd(fleet, name, "kiosk/1/kiosk.nixos.json", 120_000);

  expect(await switches(log)).toEqual([]);
  expect(steps.at(-1), JSON.stringify(steps)).toMatchObject({ step: "failed", error: expect.stringMatching(new RegExp(`${system}.*NarHash`)) });
  expect(existsSync(profile)).toBe(false);
});

it("signs into a NixOS release only the Nix keys the admin accepted: a key a deployer token added is refused until `nix-key trust`", async () => {
  const fleet = await signedFleet(sb);
  const own = await fleet.admin(["nix-key", "create", "kiosk-cache"]);
  expect(own.code, own.stderr).toBe(0);
  const ownKey = own.stdout.trim();
  const system = await buildSystem(sb, join(await sb.dir(), "switch.log"));

  // Someone with nix:write (or the coordinator itself) adds a key of its own to the organization.
  const rogue = await fleet.admin(["nix-key", "create", "rogue"], { FLOTILLA_TOKEN: await apiToken(fleet, "deployer") });
  expect(rogue.code, rogue.stderr).toBe(0);
  const rogueKey = rogue.stdout.trim();

  const refused = await fleet.admin(["release", "create", "--nixos", system, "--name", "kiosk", "--version", "1"]);
  expect(refused.code).toBe(1);
  expect(refused.stderr.trim().split("\n").at(-1)).toBe(
    `error: the coordinator lists Nix key ${rogueKey} that you have not accepted; if it is your organization's, accept it with \`flotilla nix-key trust ${rogueKey}\``,
  );
  expect((await fleet.adminJson<unknown[]>(["release", "ls", "--json"])).length).toBe(0);
  const listed = await fleet.adminJson<{ publicKey: string; accepted: boolean }[]>(["nix-key", "ls", "--json"]);
  expect(listed.map((k) => [k.publicKey, k.accepted]).sort()).toEqual([[ownKey, true], [rogueKey, false]].sort());

  const trusted = await fleet.admin(["nix-key", "trust", rogueKey]);
  expect(trusted.code, trusted.stderr).toBe(0);
  const created = await fleet.admin(["release", "create", "--nixos", system, "--name", "kiosk", "--version", "1"]);
  expect(created.code, created.stderr).toBe(0);
  const [release] = await fleet.adminJson<{ meta: { nixPublicKeys: string[] } }[]>(["release", "ls", "--json"]);
  expect(release?.meta.nixPublicKeys.sort()).toEqual([ownKey, rogueKey].sort());
});
