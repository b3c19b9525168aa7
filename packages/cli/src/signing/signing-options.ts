/**
 * The options that choose the keys an admin signs with, shared by `signing-key add`,
 * `release create`, `release reissue` and `rollout abort --roll-back`.
 */
import type { Command } from "commander";
import type { AdminTarget } from "../admin/client.ts";
import { Credentials } from "../admin/credentials.ts";
import { UsageError } from "../errors.ts";
import { openKeysAtHand, openSigners, type Signer } from "./signers.ts";

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
    .option("--ssh-key <text>", "with --ssh-agent: only keys whose comment contains this")
    .addHelpText("after", "\nWithout --key-file or --ssh-agent, release signing uses whichever keys at hand the organization's root accepts: your admin key (--key) and the ed25519 keys in ssh-agent.");
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

/** The keys a role of the current root accepts, and how many must sign. */
export interface RoleKeys {
  keyIds: readonly string[];
  threshold: number;
}

/**
 * The signers for metadata of a role. Keys the admin named are used as given (the coordinator
 * judges them). Without any, the keys at hand that the role accepts: the admin key and the keys
 * in ssh-agent. When they are too few, the error lists the key ids the role accepts and the ways
 * to supply one.
 */
export async function signersFor(target: AdminTarget, o: SigningOpts, role: RoleKeys): Promise<{ signers: Signer[]; close(): void }> {
  if (o.keyFile.length > 0 || o.sshAgent === true) return signers(target, o);
  const atHand = await openKeysAtHand(() => Credentials.of(target).identity(), target.sshAuthSock);
  const accepted = atHand.signers.filter((s) => role.keyIds.includes(s.keyId));
  if (accepted.length >= role.threshold) return { signers: accepted, close: atHand.close };
  atHand.close();
  const tried = atHand.signers.map((s) => `${s.label} ${s.keyId.slice(0, 16)}`).join(", ");
  throw new UsageError(
    `${accepted.length === 0 ? "none" : `only ${accepted.length}`} of the keys at hand (${tried}) may sign this organization's releases: ` +
      `it takes ${role.threshold} of ${role.keyIds.map((k) => k.slice(0, 16)).join(", ")}; ` +
      `supply one with --key FILE (as your admin key), --ssh-agent (a key loaded in ssh-agent, SSH_AUTH_SOCK) or --key-file FILE`,
  );
}
