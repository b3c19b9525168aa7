import { rm } from "node:fs/promises";
import { join } from "node:path";
import { readJsonIfExists as readJson, writeJsonAtomic } from "@flotilla/protocol/agent";

/** What the agent remembers of its enrollment, in `<state-dir>/enrollment.json`. */
export interface Enrollment {
  url: string;
  /** keyPin() of the coordinator's key: checked on every connection. */
  pin: string;
  deviceId: string;
  name: string;
  orgId: string;
  enrolledAt: number;
  /**
   * The organization's TUF root the join string named (version, tufRootDigest), if it named one:
   * the only root the agent takes as its first (releases/coordinator-http.ts pinRoot).
   */
  root?: { version: number; sha256: string };
  /** sha256 of the join string of the last `--rejoin`, so restarting with the same flag does not enroll again. */
  rejoinedWith?: string;
  /** More addresses of the same coordinator (its other replicas), from the join string: dialled in turn when one fails. */
  failoverUrls?: string[];
}

/** The desired state the agent last applied, in `<state-dir>/desired.json`. */
export interface AppliedState {
  generation: number;
  labels: Record<string, string>;
  lifecycle: string;
}

/** The files of an agent's state directory. */
export class StateDir {
  constructor(readonly dir: string) {}

  get keyPath(): string {
    return join(this.dir, "agent.key");
  }
  get outboxDir(): string {
    return join(this.dir, "outbox");
  }

  readEnrollment(): Promise<Enrollment | undefined> {
    return readJson<Enrollment>(join(this.dir, "enrollment.json"));
  }
  writeEnrollment(e: Enrollment): Promise<void> {
    return writeJsonAtomic(join(this.dir, "enrollment.json"), e);
  }
  readApplied(): Promise<AppliedState | undefined> {
    return readJson<AppliedState>(join(this.dir, "desired.json"));
  }
  writeApplied(s: AppliedState): Promise<void> {
    return writeJsonAtomic(join(this.dir, "desired.json"), s);
  }
  async readFactsFingerprint(): Promise<string | undefined> {
    return (await readJson<{ sha: string }>(join(this.dir, "facts.json")))?.sha;
  }
  writeFactsFingerprint(sha: string): Promise<void> {
    return writeJsonAtomic(join(this.dir, "facts.json"), { sha });
  }

  /**
   * Forgets what belonged to the organization of an earlier enrollment (after --rejoin): its TUF
   * metadata, the desired state applied and the outbox. Installed releases stay.
   */
  async forgetOrganization(): Promise<void> {
    for (const f of ["desired.json", "facts.json"]) await rm(join(this.dir, f), { force: true });
    await rm(join(this.dir, "releases", "tuf"), { recursive: true, force: true });
    await rm(this.outboxDir, { recursive: true, force: true });
  }

  /** Forgets every credential: the key, the enrollment and everything queued for the coordinator. */
  async forget(): Promise<void> {
    for (const f of ["enrollment.json", "agent.key", "desired.json", "facts.json"]) {
      await rm(join(this.dir, f), { force: true });
    }
    await rm(this.outboxDir, { recursive: true, force: true });
  }
}
