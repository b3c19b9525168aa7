/**
 * The admin's own list of the organization's Nix public keys, so that a compromised coordinator
 * cannot have the admin sign its own key into a NixOS release (devices trust exactly the keys a
 * release names). Lives in `$FLOTILLA_HOME/nix-keys/`, one file per coordinator and
 * organization, like the pinned TUF roots.
 *
 * A key gets in when this admin creates it (`nix-key create`: the key the coordinator made for
 * the call), imports it (`nix-key import`: the public half of what the admin gave, computed here),
 * accepts it (`nix-key trust KEY`), or, when there is no list yet, at the first
 * `release create --nixos`, which pins what the coordinator lists (trust on first use).
 */
import { join } from "node:path";
import { readJsonIfExists, writeJsonAtomic } from "@flotilla/protocol";
import type { AdminTarget } from "../admin/client.ts";
import { pinPath } from "../admin/pins.ts";
import { ExitError, UsageError } from "../errors.ts";

/** A Nix public key: `name:base64` of 32 bytes. */
export const NIX_PUBLIC_KEY = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}:[A-Za-z0-9+/]{43}=$/;

interface PinnedNixKeys {
  coordinator: string;
  organization: string;
  keys: string[];
}

const pinFile = (target: AdminTarget) => pinPath(target, "nix-keys");

/** The keys this admin accepted, or undefined when it has accepted none yet. */
export async function pinnedNixKeys(target: AdminTarget): Promise<string[] | undefined> {
  const { path } = await pinFile(target);
  return (await readJsonIfExists<PinnedNixKeys>(path))?.keys;
}

async function writePins(target: AdminTarget, keys: string[]): Promise<void> {
  const { path, coordinator, organization } = await pinFile(target);
  const pins: PinnedNixKeys = { coordinator, organization, keys: [...new Set(keys)].sort() };
  await writeJsonAtomic(path, pins);
}

/** Adds public keys to the admin's list. */
export async function pinNixKeys(target: AdminTarget, keys: string[]): Promise<void> {
  for (const k of keys) if (!NIX_PUBLIC_KEY.test(k)) throw new UsageError(`${JSON.stringify(k.slice(0, 80))} is not a Nix public key name:base64 (32 bytes)`);
  await writePins(target, [...((await pinnedNixKeys(target)) ?? []), ...keys]);
}

/** Removes the keys named `name` from the admin's list (after `nix-key rm`). */
export async function unpinNixKey(target: AdminTarget, name: string): Promise<void> {
  const pins = await pinnedNixKeys(target);
  if (pins) await writePins(target, pins.filter((k) => k.slice(0, k.indexOf(":")) !== name));
}

/**
 * The Nix keys a NixOS release may name: those the coordinator lists that this admin accepted.
 * Refuses, in one line, a list with a key the admin has not accepted. With no list yet, pins
 * the coordinator's (trust on first use) and says so on stderr.
 */
export async function releaseNixKeys(target: AdminTarget, listed: string[], stderr: (text: string) => void): Promise<string[]> {
  const pins = await pinnedNixKeys(target);
  if (!pins) {
    await pinNixKeys(target, listed);
    stderr(`accepted the organization's Nix keys on first use (pinned in ${join(target.home, "nix-keys")}): ${listed.join(" ")}\n`);
    return listed;
  }
  const unknown = listed.filter((k) => !pins.includes(k));
  if (unknown.length) {
    throw new ExitError(
      `the coordinator lists Nix key ${unknown.join(", ")} that you have not accepted; if it is your organization's, accept it with \`flotilla nix-key trust ${unknown[0]}\``,
      1,
    );
  }
  const keys = listed.filter((k) => pins.includes(k));
  if (!keys.length) throw new ExitError("none of the Nix keys you accepted is still the organization's: create one (`flotilla nix-key create NAME`) or accept one (`flotilla nix-key trust KEY`)", 1);
  return keys;
}
