/**
 * The options that choose the keys an admin signs with, shared by `signing-key add`,
 * `release create`, `release reissue` and `rollout abort --roll-back`.
 */
import type { Command } from "commander";
import type { AdminTarget } from "../admin/client.ts";
import { Credentials } from "../admin/credentials.ts";
import { openSigners } from "./signers.ts";

/** How long targets metadata signed by these commands stays valid unless told otherwise. */
export const DEFAULT_TARGETS_EXPIRY = "365d";

export interface SigningOpts {
  keyFile: string[];
  sshAgent?: boolean;
  sshKey?: string;
}

/** Commander collector for repeatable options. */
export const collect = (v: string, prev: string[]) => [...prev, v];

/** Adds `--key-file`, `--ssh-agent` and `--ssh-key` to a command. */
export function withSigningOptions(cmd: Command): Command {
  return cmd
    .option("--key-file <file>", "sign with this ed25519 key file (OpenSSH or Flotilla, mode 0600); repeatable", collect, [])
    .option("--ssh-agent", "sign with the ed25519 keys in ssh-agent (SSH_AUTH_SOCK)")
    .option("--ssh-key <text>", "with --ssh-agent: only keys whose comment contains this");
}

/** The signers the options name; without any, the admin's own key. Close them after use. */
export function signers(target: AdminTarget, o: SigningOpts) {
  return openSigners({
    keyFiles: o.keyFile,
    sshAgent: o.sshAgent === true,
    sshKeyFilter: o.sshKey,
    sshAuthSock: target.sshAuthSock,
    fallback: () => Credentials.of(target).identity(),
  });
}
