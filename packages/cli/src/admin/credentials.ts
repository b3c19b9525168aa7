import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { loadIdentity, loadOrCreateIdentity, parseAnyPublicKey, readJsonIfExists, writeJsonAtomic, type Identity } from "@flotilla/protocol";
import { SshAgent } from "../signing/ssh-agent.ts";
import type { AdminTarget } from "./client.ts";

/** What signs login challenges: the key itself, or ssh-agent holding it. */
export interface LoginSigner {
  publicKey: Uint8Array;
  sign(data: Uint8Array): Promise<Uint8Array>;
  close(): void;
}

/** What the CLI knows of one coordinator. */
export interface CoordinatorEntry {
  /** keyPin() of the coordinator's key, recorded at the first login and checked ever after. */
  pin: string;
  /** The session in the default organization (the first the key belongs to). */
  session?: { token: string; expiresAt: number };
  organization?: { id: string; name: string };
  role?: string;
  /** Sessions opened with --org, by the organization as given. */
  orgSessions?: Record<string, { token: string; expiresAt: number; role: string }>;
}

/** `$FLOTILLA_HOME/context.json` (mode 0600). */
export interface AdminContext {
  /** The coordinator last logged in to: the default for --coordinator. */
  current?: string;
  coordinators: Record<string, CoordinatorEntry>;
}

/** The admin key and context kept under one home directory. */
export class Credentials {
  /**
   * @param home `$FLOTILLA_HOME`: the admin's key and context.
   * @param keyFile an admin key to use instead of `$FLOTILLA_HOME/admin.key`: PKCS#8 PEM or an
   *   unencrypted OpenSSH ed25519 key such as ~/.ssh/id_ed25519.
   * @param sshAuthSock ssh-agent's socket, for a `keyFile` that only ssh-agent can sign with.
   */
  constructor(
    readonly home: string,
    readonly keyFile?: string,
    readonly sshAuthSock?: string,
  ) {}

  /** The credentials an admin command acts with. */
  static of(target: AdminTarget): Credentials {
    return new Credentials(target.home, target.keyFile, target.sshAuthSock);
  }

  /** The admin key; the default one is created on first use (mode 0600). */
  async identity(): Promise<Identity> {
    if (!this.keyFile) return loadOrCreateIdentity(join(this.home, "admin.key"));
    try {
      return await loadIdentity(this.keyFile);
    } catch (err) {
      throw new Error(`cannot use admin key ${this.keyFile}: ${(err as Error).message}`);
    }
  }

  /**
   * The signer for logins. With `--key` naming a public key (`id_ed25519.pub`), or a private key
   * that is encrypted with a passphrase, the challenge is signed by ssh-agent (SSH_AUTH_SOCK),
   * which must hold that key; the private key never has to be readable by Flotilla.
   */
  async loginSigner(): Promise<LoginSigner> {
    let fileError: Error;
    try {
      const identity = await this.identity();
      return { publicKey: identity.publicKey, sign: (d) => Promise.resolve(identity.sign(d)), close: () => {} };
    } catch (err) {
      if (!this.keyFile) throw err;
      fileError = err as Error;
    }
    const publicKey = await this.publicKeyOfKeyFile();
    if (!publicKey) throw fileError;
    const sshAuthSock = this.sshAuthSock;
    if (!sshAuthSock) throw new Error(`${fileError.message}; to sign with ssh-agent instead, start it and set SSH_AUTH_SOCK`);
    const agent = await SshAgent.open(sshAuthSock);
    const key = (await agent.ed25519Keys()).find((k) => Buffer.compare(Buffer.from(k.publicKey), Buffer.from(publicKey)) === 0);
    if (!key) {
      agent.close();
      throw new Error(`ssh-agent does not hold the key of ${this.keyFile}: ssh-add it first`);
    }
    return { publicKey, sign: (d) => agent.sign(key, d), close: () => agent.close() };
  }

  /** The public key of `--key`: the file itself when it is a public key, else FILE.pub. */
  private async publicKeyOfKeyFile(): Promise<Uint8Array | undefined> {
    for (const path of [this.keyFile!, `${this.keyFile!}.pub`]) {
      try {
        return parseAnyPublicKey((await readFile(path, "utf8")).trim());
      } catch {
        // not a public key, or not there: try the next
      }
    }
    return undefined;
  }

  async context(): Promise<AdminContext> {
    return (await readJsonIfExists<AdminContext>(join(this.home, "context.json"))) ?? { coordinators: {} };
  }

  saveContext(ctx: AdminContext): Promise<void> {
    return writeJsonAtomic(join(this.home, "context.json"), ctx);
  }
}
