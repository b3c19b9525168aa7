import { join } from "node:path";
import { readJsonIfExists, writeJsonAtomic, type ReleaseMeta } from "@flotilla/protocol/agent";

/** How far the agent got with one release name; written before each phase starts. */
export interface ReleaseProgressState {
  target: string;
  /** The deployment it belongs to (DesiredRelease.deployed_at); a new one is tried again. */
  deployedAt?: number;
  /** downloading: verified, fetching; activating: handed to the activator; done: finished. */
  phase: "downloading" | "activating" | "done";
  sha256?: string;
  length?: number;
  meta?: ReleaseMeta;
  /** How often a crash interrupted its activation before the switch; bounded, then it fails. */
  interruptions?: number;
  /** How it ended, when done. */
  outcome?: "healthy" | "failed" | "rolled-back";
}

/** `<state-dir>/releases/progress.json`: per release name, replaced atomically on every change. */
export class ReleaseStateFile {
  private cache: Record<string, ReleaseProgressState> | undefined;

  constructor(readonly dir: string) {}

  private get path(): string {
    return join(this.dir, "progress.json");
  }

  async all(): Promise<Record<string, ReleaseProgressState>> {
    this.cache ??= (await readJsonIfExists<Record<string, ReleaseProgressState>>(this.path)) ?? {};
    return this.cache;
  }

  async get(name: string): Promise<ReleaseProgressState | undefined> {
    return (await this.all())[name];
  }

  async set(name: string, state: ReleaseProgressState): Promise<void> {
    const all = { ...(await this.all()), [name]: state };
    await writeJsonAtomic(this.path, all);
    this.cache = all;
  }
}
