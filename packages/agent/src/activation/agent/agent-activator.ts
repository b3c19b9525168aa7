/**
 * Activates `kind: "agent"` releases (docs/self-update.md): the agent updating itself. The
 * release's file, verified like any release before it gets here, is staged as an executable
 * under `agent-versions/`, and the launcher is asked to hand over to it. The new agent confirms
 * at its start (recover()) once it has reached the coordinator; the launcher restores the
 * previous executable when it does not. The outcome is reported by whichever agent runs then.
 */
import { chmod, copyFile, mkdir, open, rename } from "node:fs/promises";
import { dirname, join } from "node:path";
import { readJsonIfExists, type Logger } from "@flotilla/protocol/agent";
import { fsyncDir, removeDurable, writeFileDurable } from "../../durable.ts";
import type { ActivationEvents, ActivationOutcome, ActivationRequest, Activator, InstalledRelease } from "../activator.ts";
import { executablePath, INSTALLED, stagedId, versionsDir, type LauncherState, type StagedExecutable } from "./launcher-state.ts";
import type { LauncherLink } from "./link.ts";

export interface AgentActivatorOptions {
  /** The agent's state directory (the launcher's `agent-versions/` is in it). */
  stateDir: string;
  /** The channel to the launcher that started this agent. */
  link: LauncherLink;
  /** The version this agent reports, for the release it rolled back to when that is the installed one. */
  version: string;
  log: Logger;
}

/** `agent-activation.json`: the handover this agent asked for, so that the next agent reports its outcome. */
interface Journal {
  to: StagedExecutable;
}

const never = new AbortController().signal;

export class AgentActivator implements Activator {
  readonly kind = "agent" as const;
  private readonly dir: string;
  private readonly journalPath: string;

  constructor(private readonly opts: AgentActivatorOptions) {
    this.dir = versionsDir(opts.stateDir);
    this.journalPath = join(opts.stateDir, "agent-activation.json");
  }

  /** Only an agent that a launcher runs can hand over to another executable. */
  async available(): Promise<boolean> {
    return !this.opts.link.gone.aborted;
  }

  private launcherState(): Promise<LauncherState> {
    return readJsonIfExists<LauncherState>(join(this.dir, "launcher.json")).then((s) => s ?? {});
  }

  /** The staged executable this process runs, if it is one. */
  private async running(): Promise<StagedExecutable | undefined> {
    const id = this.opts.link.running;
    if (id === INSTALLED) return undefined;
    const s = await this.launcherState();
    return [s.pending?.to, s.current, s.last?.to].find((x) => x?.id === id);
  }

  async installed(): Promise<InstalledRelease[]> {
    const r = await this.running();
    return r ? [installedOf(r)] : [];
  }

  async close(): Promise<void> {}

  /**
   * On probation (the launcher runs this executable and waits for it): confirms once the agent
   * has reached the coordinator, and returns `healthy`. After a handover this agent did not run
   * on probation (it is the one restored, or the confirmed one restarted): returns how it ended.
   */
  async recover(events: ActivationEvents): Promise<Map<string, ActivationOutcome>> {
    const out = new Map<string, ActivationOutcome>();
    const journal = await readJsonIfExists<Journal>(this.journalPath);
    const s = await this.launcherState();
    const me = this.opts.link.running;
    if (s.pending && s.pending.to.id === me) {
      events.step("health-checking");
      const since = Date.now();
      await events.reachedCoordinator(since, never);
      // Refused (too late) or the launcher gone: it stops this agent; nothing to report.
      await this.opts.link.request({ type: "confirm", id: me });
      this.opts.log.info("confirmed the new agent", { version: s.pending.to.version });
      out.set(s.pending.to.name, { outcome: "healthy", current: installedOf(s.pending.to) });
    } else if (journal && s.last?.to.id === journal.to.id) {
      const { last } = s;
      if (last.outcome === "healthy" && me === last.to.id) out.set(last.to.name, { outcome: "healthy", current: installedOf(last.to) });
      else out.set(last.to.name, { outcome: "rolled-back", error: last.reason ?? "rolled back", current: await this.current(last.to.name) });
    }
    // Without a matching outcome the handover never started: the release manager tries again.
    if (journal) await removeDurable(this.journalPath);
    return out;
  }

  activate(req: ActivationRequest, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome> {
    return this.run(req, events, signal);
  }

  private async run(req: ActivationRequest, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome> {
    const { meta, sha256 } = req;
    if (meta.kind !== "agent") throw new Error(`agent activator cannot activate a ${meta.kind} release`);
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error("sha256 must be 64 lowercase hex digits");
    if (req.artifactPath === undefined) throw new Error("an agent release needs its staged artifact");
    const to: StagedExecutable = { id: stagedId(meta.counter, sha256), name: meta.name, version: meta.version, counter: meta.counter, sha256 };
    if (this.opts.link.running === to.id) {
      events.step("healthy");
      return { outcome: "healthy", current: installedOf(to) };
    }
    events.step("activating");
    await writeFileDurable(this.journalPath, JSON.stringify({ to } satisfies Journal) + "\n");
    try {
      await stage(req.artifactPath, executablePath(this.opts.stateDir, to.id));
      if (signal.aborted) throw new Error("activation aborted");
      await this.opts.link.request({ type: "switch", to });
    } catch (err) {
      await removeDurable(this.journalPath);
      const error = `could not hand over to ${meta.version}: ${err instanceof Error ? err.message : String(err)}`;
      events.step("failed", error);
      return { outcome: "failed", error, current: await this.current(meta.name) };
    }
    this.opts.log.info("handing over to the new agent", { version: meta.version });
    // The launcher stops this agent now; the next one reports the outcome (recover()).
    await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })));
    throw new Error(`handed over to ${meta.version}`);
  }

  /** What runs now under release name `name`: the staged executable, or the installed one (counter 0). */
  private async current(name: string): Promise<InstalledRelease> {
    const r = await this.running();
    return r ? installedOf(r) : { name, version: this.opts.version, counter: 0, sha256: "" };
  }
}

/** Copies the verified artifact to `path` as an executable (0755), durably: whole or absent. */
async function stage(artifact: string, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = `${path}.tmp`;
  await copyFile(artifact, tmp);
  await chmod(tmp, 0o755);
  const fh = await open(tmp, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncDir(dirname(path));
}

function installedOf(x: StagedExecutable): InstalledRelease {
  return { name: x.name, version: x.version, counter: x.counter, sha256: x.sha256 };
}
