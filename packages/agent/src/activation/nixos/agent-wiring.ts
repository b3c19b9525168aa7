import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fetchPinnedCertificate, type Logger } from "@flotilla/protocol/agent";
import type { AgentConfig } from "../../config.ts";
import type { Activator } from "../activator.ts";
import { NixosActivator } from "./nixos-activator.ts";

/**
 * The agent's NixOS activator, when `--nixos-profile` is set: it fetches closures from the
 * organization's cache on the coordinator the agent is enrolled with, with the agent's session
 * as credentials, and trusts exactly the Nix keys the release's signed metadata names. Over
 * https, nix trusts only the coordinator's pinned certificate, written to `nixos/coordinator.pem`.
 */
export async function nixosActivators(
  opts: Pick<AgentConfig, "stateDir"> & Partial<Pick<AgentConfig, "nixosProfile" | "nixosSwitchTimeoutMs">>,
  enrollment: { url: string; pin: string; orgId: string },
  token: () => string,
  log: Logger,
): Promise<Activator[]> {
  if (!opts.nixosProfile) return [];
  const dir = join(opts.stateDir, "nixos");
  let caCertFile: string | undefined;
  if (enrollment.url.startsWith("https:")) {
    caCertFile = join(dir, "coordinator.pem");
    try {
      const pem = await fetchPinnedCertificate(enrollment.url, enrollment.pin);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await writeFile(caCertFile, pem, { mode: 0o600 });
    } catch (err) {
      // A CA-issued certificate, or the coordinator out of reach: nix uses the system's CAs, or
      // the certificate written at an earlier start.
      log.info("coordinator certificate not written for nix", { err: String(err) });
      if (/not an ed25519 key/.test(String(err))) caCertFile = undefined;
    }
  }
  return [
    new NixosActivator({
      stateDir: dir,
      // Read at each fetch: a move to another organization changes orgId (move.ts).
      cacheUrl: () => `${enrollment.url}/nix/${enrollment.orgId}`,
      trustedPublicKeys: (meta) => meta.nixPublicKeys,
      token,
      caCertFile,
      profile: opts.nixosProfile,
      confirmWindowMs: opts.nixosSwitchTimeoutMs,
    }),
  ];
}
