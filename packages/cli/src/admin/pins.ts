/**
 * Where the admin keeps what it pinned about one coordinator and organization (the TUF roots it
 * verified, the Nix keys it accepted): `$FLOTILLA_HOME/<folder>/<id>.json`, one file per
 * coordinator and organization. The file names must stay as they are, or existing pins are lost.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { targetUrl, type AdminTarget } from "./client.ts";

/** Which organization a pin belongs to, from the admin's own flags, never from the coordinator: --org, an API token's own, or the key's default one. */
function organizationLabel(target: AdminTarget): string {
  if (target.org) return `org:${target.org}`;
  if (target.apiToken) return `token:${createHash("sha256").update(target.apiToken).digest("hex").slice(0, 16)}`;
  return "default";
}

/** The pin file in `folder` for the target's coordinator and organization, and the labels to record in it. */
export async function pinPath(target: AdminTarget, folder: string): Promise<{ path: string; coordinator: string; organization: string }> {
  const coordinator = await targetUrl(target);
  const organization = organizationLabel(target);
  const id = createHash("sha256").update(`${coordinator}\n${organization}`).digest("hex").slice(0, 32);
  return { path: join(target.home, folder, `${id}.json`), coordinator, organization };
}
