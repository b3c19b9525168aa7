import { stat } from "node:fs/promises";
import { loadIdentity, tufKeyId, type Identity } from "@flotilla/protocol";
import { UsageError } from "../errors.ts";
import { SshAgent } from "./ssh-agent.ts";

/** A key that signs TUF metadata on the admin's machine: a key file or a key in ssh-agent. */
export interface Signer {
  keyId: string;
  publicKey: Uint8Array;
  /** For messages: the file, or the agent key's comment. */
  label: string;
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export interface SignerSources {
  /** Key files: OpenSSH ed25519 private keys or Flotilla key files, mode 0600. */
  keyFiles: string[];
  /** Use the ed25519 keys of the ssh-agent at SSH_AUTH_SOCK. */
  sshAgent: boolean;
  /** Only agent keys whose comment contains this. */
  sshKeyFilter?: string;
  sshAuthSock: string | undefined;
  /** Used when neither key files nor ssh-agent were given: the admin's own key. */
  fallback: () => Promise<Identity>;
}

function fromIdentity(identity: Identity, label: string): Signer {
  return {
    keyId: tufKeyId(identity.publicKey),
    publicKey: identity.publicKey,
    label,
    sign: (data) => Promise.resolve(identity.sign(data)),
  };
}

async function keyFileSigner(path: string): Promise<Signer> {
  let mode: number;
  try {
    mode = (await stat(path)).mode;
  } catch {
    throw new UsageError(`signing key file ${path} does not exist`);
  }
  // As ssh does: a private key others can read is not trusted to be private.
  if ((mode & 0o077) !== 0) throw new UsageError(`signing key file ${path} is readable by others: chmod 600 it`);
  try {
    return fromIdentity(await loadIdentity(path), path);
  } catch (err) {
    throw new UsageError(`cannot use signing key ${path}: ${(err as Error).message}`);
  }
}

/** Opens the signers the admin named; close() ends the ssh-agent connection. */
export async function openSigners(src: SignerSources): Promise<{ signers: Signer[]; close(): void }> {
  const signers: Signer[] = [];
  for (const f of src.keyFiles) signers.push(await keyFileSigner(f));
  let agent: SshAgent | undefined;
  if (src.sshAgent) {
    agent = await SshAgent.open(src.sshAuthSock);
    const a = agent;
    const keys = (await a.ed25519Keys()).filter((k) => !src.sshKeyFilter || k.comment.includes(src.sshKeyFilter));
    if (keys.length === 0) {
      a.close();
      throw new UsageError(`ssh-agent holds no ed25519 key${src.sshKeyFilter ? ` whose comment contains ${JSON.stringify(src.sshKeyFilter)}` : ""}: ssh-add one`);
    }
    for (const k of keys) {
      signers.push({ keyId: tufKeyId(k.publicKey), publicKey: k.publicKey, label: `ssh-agent:${k.comment}`, sign: (d) => a.sign(k, d) });
    }
  }
  if (signers.length === 0) signers.push(fromIdentity(await src.fallback(), "admin key"));
  const unique = [...new Map(signers.map((s) => [s.keyId, s])).values()];
  return { signers: unique, close: () => agent?.close() };
}

/**
 * Every key at hand, for an admin who named none: the admin key, and the ed25519 keys of
 * ssh-agent when one answers at SSH_AUTH_SOCK (none when it does not).
 */
export async function openKeysAtHand(ownKey: () => Promise<Identity>, sshAuthSock: string | undefined): Promise<{ signers: Signer[]; close(): void }> {
  const signers = [fromIdentity(await ownKey(), "admin key")];
  let agent: SshAgent | undefined;
  if (sshAuthSock) {
    try {
      agent = await SshAgent.open(sshAuthSock);
      const a = agent;
      for (const k of await a.ed25519Keys()) signers.push({ keyId: tufKeyId(k.publicKey), publicKey: k.publicKey, label: `ssh-agent:${k.comment}`, sign: (d) => a.sign(k, d) });
    } catch {
      // No agent answering there: the admin key alone is at hand.
      agent?.close();
      agent = undefined;
    }
  }
  const unique = [...new Map(signers.map((s) => [s.keyId, s])).values()];
  return { signers: unique, close: () => agent?.close() };
}
