import { homedir } from "node:os";
import { join } from "node:path";
import { loadIdentity, loadOrCreateIdentity, readJsonIfExists, writeJsonAtomic, type Identity } from "@flotilla/protocol";

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

/** `$FLOTILLA_HOME`, default `~/.config/flotilla`: the admin's key and context. */
export function flotillaHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.FLOTILLA_HOME || join(env.XDG_CONFIG_HOME || join(homedir(), ".config"), "flotilla");
}

/** The admin key and context kept under one home directory. */
export class Credentials {
  /**
   * @param keyFile an admin key to use instead of `$FLOTILLA_HOME/admin.key`: PKCS#8 PEM or an
   *   unencrypted OpenSSH ed25519 key such as ~/.ssh/id_ed25519.
   */
  constructor(
    readonly home: string,
    readonly keyFile?: string,
  ) {}

  /** The admin key; the default one is created on first use (mode 0600). */
  async identity(): Promise<Identity> {
    if (!this.keyFile) return loadOrCreateIdentity(join(this.home, "admin.key"));
    try {
      return await loadIdentity(this.keyFile);
    } catch (err) {
      throw new Error(`cannot use admin key ${this.keyFile}: ${(err as Error).message}`);
    }
  }

  async context(): Promise<AdminContext> {
    return (await readJsonIfExists<AdminContext>(join(this.home, "context.json"))) ?? { coordinators: {} };
  }

  saveContext(ctx: AdminContext): Promise<void> {
    return writeJsonAtomic(join(this.home, "context.json"), ctx);
  }
}
