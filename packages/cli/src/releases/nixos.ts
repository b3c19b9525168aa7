import { mkdtemp, realpath, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adminv1 } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";
import { UsageError } from "../errors.ts";
import { pushToNixCache } from "../nix/cache.ts";
import { localClosure } from "../nix/closure.ts";
import { releaseNixKeys } from "../nix/trusted-keys.ts";

const STORE_PATH = /^\/nix\/store\/[0-9a-z]{32}-[^/]+$/;

/**
 * `release create --nixos PATH`: copies the system closure to the organization's binary cache,
 * and returns what the signed release carries: the store path, the organization's Nix public
 * keys that this admin accepted (which the agent will trust for it, and only them), and the
 * artifact `NAME.nixos.json`, which the release's TUF target signs like any other: the store
 * path and the closure manifest, every path of the closure with its NarHash and NarSize as the
 * admin's own nix has them. Agents install the closure only when what they fetched matches it.
 */
export async function prepareNixosRelease(
  target: AdminTarget,
  path: string,
  name: string,
  stderr: (text: string) => void,
): Promise<{ storePath: string; nixPublicKeys: string[]; artifact: string }> {
  let storePath: string;
  try {
    storePath = await realpath(path);
  } catch {
    throw new UsageError(`${path} does not exist: build the system first (nix build ...toplevel)`);
  }
  if (!STORE_PATH.test(storePath)) throw new UsageError(`${path} is not a Nix store path (it resolves to ${storePath})`);
  const { keys } = await (await serviceClient(target, adminv1.NixService)).listNixKeys({});
  if (keys.length === 0) throw new UsageError("the organization has no Nix signing key: run `flotilla nix-key create NAME` first");
  const nixPublicKeys = await releaseNixKeys(target, keys.map((k) => k.publicKey), stderr);
  const closure = await localClosure(storePath);
  await pushToNixCache(target, [storePath], stderr);
  const dir = await mkdtemp(join(tmpdir(), "flotilla-nixos-"));
  const artifact = join(dir, `${name}.nixos.json`);
  await writeFile(artifact, JSON.stringify({ storePath, closure }) + "\n");
  return { storePath, nixPublicKeys, artifact };
}
