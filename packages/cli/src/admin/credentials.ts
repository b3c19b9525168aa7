import { homedir } from "node:os";
import { join } from "node:path";
import { loadOrCreateIdentity, readJsonIfExists, writeJsonAtomic, type Identity } from "@flotilla/protocol";

/** What the CLI knows of one coordinator. */
export interface CoordinatorEntry {
  /** keyPin() of the coordinator's key, recorded at the first login and checked ever after. */
  pin: string;
  session?: { token: string; expiresAt: number };
  organization?: { id: string; name: string };
  role?: string;
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
  constructor(readonly home: string) {}

  get keyPath(): string {
    return join(this.home, "admin.key");
  }

  /** The admin key, created on first use (mode 0600). */
  identity(): Promise<Identity> {
    return loadOrCreateIdentity(this.keyPath);
  }

  async context(): Promise<AdminContext> {
    return (await readJsonIfExists<AdminContext>(join(this.home, "context.json"))) ?? { coordinators: {} };
  }

  saveContext(ctx: AdminContext): Promise<void> {
    return writeJsonAtomic(join(this.home, "context.json"), ctx);
  }
}
