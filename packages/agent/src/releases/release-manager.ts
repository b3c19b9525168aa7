import { rm } from "node:fs/promises";
import { join } from "node:path";
import { backoffDelay, readJsonIfExists, Wakeup, writeJsonAtomic, type Logger } from "@flotilla/protocol/agent";
import type { ActivationEvents, ActivationOutcome, Activator, ControlAction, InstalledRelease } from "../activation/activator.ts";
import { pinRoot, RootRefused, TransientError, type CoordinatorHttp, type ExpectedRoot } from "./coordinator-http.ts";
import { ArtifactRefused, downloadTarget, NoSpaceError } from "./download.ts";
import { ReleaseStateFile, type ReleaseProgressState } from "./release-state.ts";
import { ReleaseRefused, verifyRelease, type VerifiedRelease } from "./verify.ts";

/** A step as it goes to the coordinator through the outbox. */
export interface ReleaseStep {
  name: string;
  targetPath: string;
  step: "checking" | "downloading" | "verifying" | "activating" | "health-checking" | "healthy" | "failed" | "rolled-back" | ControlStep;
  bytesDone?: number;
  bytesTotal?: number;
  error?: string;
  current?: InstalledRelease;
}

/** What the agent reports after carrying out a control command. */
export type ControlStep = "stopped" | "started" | "restarted" | "removed" | "control-failed";

/** Per release name, what the agent last did of admins' control commands (`control.json`). */
interface ControlApplied {
  /** The run state it brought about. */
  state: "running" | "stopped" | "removed";
  /** The highest restart generation it acted on. */
  restartGen: number;
}

export interface ReleaseManagerOptions {
  /** `<state-dir>/releases`: progress, pinned TUF metadata, staged artifacts. */
  dir: string;
  /** The organization's root the join string named: the only one pinned as the first (pinRoot). */
  expectedRoot?: ExpectedRoot;
  /** The activators whose available() was true, one per kind. */
  activators: Activator[];
  /** The coordinator connection now, if any. */
  connection(): CoordinatorHttp | undefined;
  /** Resolves when the connection may have changed. */
  connectionChanged(signal: AbortSignal): Promise<void>;
  /** Queues a step in the durable outbox. */
  report(step: ReleaseStep): Promise<void>;
  reachedCoordinator: ActivationEvents["reachedCoordinator"];
  /** Where supervised processes' output lines go (the log buffer); default: the agent's log. */
  output?: ActivationEvents["output"];
  /** Download rate cap, 0 for none. */
  bytesPerSecond: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  log: Logger;
  /** This machine's architecture (default: uname -m). */
  arch?: string;
}

/**
 * Takes the desired releases from Watch and brings each about, one at a time: verify (TUF,
 * arch, anti-rollback), download (resumable, bounded, hash-checked), hand to the activator of
 * the release's kind, and report every step. Progress is persisted before each phase, so after a
 * crash it resumes a download, or collects the outcome of an activation from the activator's
 * recover(), instead of starting again.
 */
export class ReleaseManager {
  private desired = new Map<string, Desired>();
  private readonly wake = new Wakeup();
  /** The last "no space" reported, so a device waiting for space says so once per cause. */
  private lastNoSpace: string | undefined;
  private readonly state: ReleaseStateFile;
  private readonly byKind: Map<string, Activator>;

  private readonly output: ActivationEvents["output"];

  constructor(private readonly opts: ReleaseManagerOptions) {
    this.output = opts.output ?? ((unit, stream, line) => opts.log.info("release output", { unit, stream, line }));
    this.state = new ReleaseStateFile(opts.dir);
    this.byKind = new Map(opts.activators.map((a) => [a.kind, a]));
  }

  /**
   * After a move to another organization (move.ts): the new organization's root to pin first
   * (undefined: its first root on first use). The old organization's metadata is already gone.
   */
  trustRoot(expected: ExpectedRoot | undefined): void {
    this.opts.expectedRoot = expected;
    this.wake.notify();
  }

  /**
   * Replaces the desired releases: per release name, its TUF target path and deployment time,
   * whether it should run (running, stopped, removed) and its restart generation.
   */
  setDesired(releases: { name: string; targetPath: string; deployedAt: bigint | number; runState?: string; restartGeneration?: bigint | number; purgeData?: boolean }[]): void {
    this.desired = new Map(
      releases.map((r) => [
        r.name,
        {
          name: r.name,
          targetPath: r.targetPath,
          deployedAt: Number(r.deployedAt),
          runState: r.runState === "stopped" || r.runState === "removed" ? r.runState : "running",
          restartGen: Number(r.restartGeneration ?? 0),
          purgeData: r.purgeData ?? false,
        },
      ]),
    );
    this.wake.notify();
  }

  private controlCache: Record<string, ControlApplied> | undefined;

  private async controlState(): Promise<Record<string, ControlApplied>> {
    this.controlCache ??= (await readJsonIfExists<Record<string, ControlApplied>>(join(this.opts.dir, "control.json"))) ?? {};
    return this.controlCache;
  }

  private async setControlState(name: string, applied: ControlApplied): Promise<void> {
    const all = { ...(await this.controlState()), [name]: applied };
    await writeJsonAtomic(join(this.opts.dir, "control.json"), all);
    this.controlCache = all;
  }

  /** The control command `d` still asks for, given what was done last; undefined when none. */
  private async pendingControl(d: Desired): Promise<ControlAction | undefined> {
    const done = (await this.controlState())[d.name] ?? { state: "running", restartGen: 0 };
    if (d.runState === "removed") return done.state === "removed" ? undefined : "remove";
    if (d.runState === "stopped") return done.state === "stopped" ? undefined : "stop";
    // A restart of a stopped release starts it (and says "restarted", answering the command).
    if (d.restartGen > done.restartGen) return "restart";
    return done.state !== "running" ? "start" : undefined;
  }

  /** Carries out a control command and reports how it went; done once, even when it failed. */
  private async control(d: Desired, action: ControlAction): Promise<void> {
    const steps: Record<ControlAction, ControlStep> = { stop: "stopped", start: "started", restart: "restarted", remove: "removed" };
    let error: string | undefined;
    const controllable = this.opts.activators.filter((a) => a.control);
    const owner = await this.ownerOf(d.name);
    try {
      if (action === "remove") {
        // Every activator that may hold files of this name removes them.
        for (const a of controllable) await a.control!(d.name, action, { purgeData: d.purgeData }, this.events(d.name, d.targetPath));
      } else if (!owner) {
        // Nothing installed runs, so it is stopped already; it cannot be started or restarted.
        if (action !== "stop") error = `no ${d.name} release is installed`;
      } else if (!owner.control) {
        error = `${owner.kind} releases cannot be ${steps[action]} by the agent yet`;
      } else {
        await owner.control(d.name, action, { purgeData: false }, this.events(d.name, d.targetPath));
      }
    } catch (err) {
      error = describe(err);
    }
    const state = action === "remove" ? "removed" : action === "stop" ? "stopped" : "running";
    await this.setControlState(d.name, { state, restartGen: d.restartGen });
    if (action === "remove") {
      const st = await this.state.get(d.name);
      // A later deployment of the same target installs it again.
      if (st) await this.state.set(d.name, { ...st, deployedAt: -1 });
    }
    this.opts.log.info("release control", { release: d.name, action, err: error });
    await this.report({ name: d.name, targetPath: d.targetPath, step: error === undefined ? steps[action] : "control-failed", error });
  }

  private async ownerOf(name: string): Promise<Activator | undefined> {
    for (const a of this.opts.activators) {
      if ((await a.installed()).some((r) => r.name === name)) return a;
    }
    return undefined;
  }

  private events(name: string, targetPath: string): ActivationEvents {
    return {
      step: (step, detail) => {
        // Final steps are reported from the outcome, with what runs afterwards.
        if (step === "activating" || step === "health-checking") void this.report({ name, targetPath, step, error: detail });
        else this.opts.log.info("activation step", { release: name, step, detail });
      },
      output: this.output,
      reachedCoordinator: this.opts.reachedCoordinator,
    };
  }

  /** During recover() steps name no release; the outcomes returned are reported instead. */
  private quietEvents(): ActivationEvents {
    return {
      step: (step, detail) => this.opts.log.info("recovery step", { step, detail }),
      output: this.output,
      reachedCoordinator: this.opts.reachedCoordinator,
    };
  }

  private async report(step: ReleaseStep): Promise<void> {
    try {
      await this.opts.report(step);
    } catch (err) {
      this.opts.log.error("could not queue a release step", { err: String(err), step: step.step });
    }
  }

  private async installed(name: string): Promise<InstalledRelease | undefined> {
    for (const a of this.opts.activators) {
      const found = (await a.installed()).find((r) => r.name === name);
      if (found) return found;
    }
    return undefined;
  }

  /** Runs until `signal` aborts: first recovers interrupted activations, then works. */
  async run(signal: AbortSignal): Promise<void> {
    await this.recover();
    void this.pinEarly(signal);
    for (let attempt = 0; !signal.aborted; ) {
      const work = await this.nextWork();
      if (!work) {
        await this.wake.wait(signal);
        continue;
      }
      try {
        if (work.control) await this.control(work.desired, work.control);
        else await this.process(work.desired, signal);
        attempt = 0;
      } catch (err) {
        if (signal.aborted) return;
        const delay = backoffDelay(attempt++, this.opts.backoffMinMs, this.opts.backoffMaxMs);
        this.opts.log.warn("release step failed; retrying", { release: work.desired.name, err: describe(err), retryInMs: delay });
        await this.wake.wait(signal, delay);
      }
    }
  }

  /** Pins the organization's root at the first connection after enrollment, if it has one. */
  private async pinEarly(signal: AbortSignal): Promise<void> {
    try {
      const http = await this.connected(signal);
      if (await pinRoot(http, join(this.opts.dir, "tuf"), this.opts.expectedRoot)) this.opts.log.info("organization root pinned");
    } catch (err) {
      if (err instanceof RootRefused) this.opts.log.error("organization root refused", { err: describe(err) });
      else if (!signal.aborted) this.opts.log.warn("could not pin the organization root yet", { err: describe(err) });
    }
  }

  /** An installation to bring about, else a control command to carry out. */
  private async nextWork(): Promise<{ desired: Desired; control?: ControlAction } | undefined> {
    for (const d of this.desired.values()) {
      if (d.runState === "removed") continue;
      const st = await this.state.get(d.name);
      if (!sameDeployment(st, d) || st?.phase !== "done") return { desired: d };
    }
    for (const d of this.desired.values()) {
      const control = await this.pendingControl(d);
      if (control) return { desired: d, control };
    }
    return undefined;
  }

  private async recover(): Promise<void> {
    const all = await this.state.all();
    for (const a of this.opts.activators) {
      let outcomes: Map<string, ActivationOutcome>;
      try {
        outcomes = await a.recover(this.quietEvents());
      } catch (err) {
        this.opts.log.error("activator recovery failed", { kind: a.kind, err: describe(err) });
        continue;
      }
      for (let [name, outcome] of outcomes) {
        const st = all[name];
        if (st?.phase !== "activating") continue;
        if (outcome.outcome === "healthy" && st.sha256 !== undefined && outcome.current.sha256 !== st.sha256) {
          // The activator finished an activation (a rollback, say) and cleared its journal, but the
          // agent died before saying how it ended: what runs healthy is another release, not this
          // target. The outcome is lost, so it counts as interrupted and the target is tried again.
          const error = `the agent stopped before it reported how the activation ended; ${outcome.current.version} runs`;
          outcome = { outcome: "rolled-back", error, current: outcome.current, interrupted: true };
        }
        const tries = (st.interruptions ?? 0) + 1;
        if (outcome.outcome !== "healthy" && outcome.interrupted && tries < MAX_INTERRUPTIONS) {
          // A power cut is not the release's fault: keep it in hand and activate it again.
          this.opts.log.warn("activation was interrupted; trying it again", { release: name, target: st.target, interruptions: tries });
          await this.state.set(name, { ...st, interruptions: tries });
          continue;
        }
        await this.finish(name, st, outcome);
      }
    }
  }

  private async connected(signal: AbortSignal): Promise<CoordinatorHttp> {
    for (;;) {
      const c = this.opts.connection();
      if (c) return c;
      if (signal.aborted) throw new TransientError("stopped");
      await this.opts.connectionChanged(signal);
    }
  }

  private async process(d: Desired, signal: AbortSignal): Promise<void> {
    const { name, targetPath, deployedAt } = d;
    let st = await this.state.get(name);
    // An activation handed over before a crash belongs to whatever deployment is current.
    if (st?.target !== targetPath || (st.phase !== "activating" && !sameDeployment(st, d))) st = undefined;
    if (st?.phase === "activating" && st.meta && st.sha256) {
      // Handed over before a crash and the activator's recover() knew nothing of it.
      const cur = await this.installed(name);
      if (cur?.sha256 === st.sha256 && cur.counter === st.meta.counter) {
        return this.finish(name, st, { outcome: "healthy", current: cur });
      }
    }
    const http = await this.connected(signal);
    if (!st) await this.report({ name, targetPath, step: "checking" });
    let v: VerifiedRelease;
    try {
      const installed = await this.installed(name);
      v = await verifyRelease({ http, metadataDir: join(this.opts.dir, "tuf"), expectedRoot: this.opts.expectedRoot, name, targetPath, installed, arch: this.opts.arch });
      if (!this.byKind.has(v.meta.kind)) throw new ReleaseRefused(`this agent cannot activate ${v.meta.kind} releases`);
      if (installed?.sha256 === v.sha256 && installed.counter === v.meta.counter) {
        return this.finish(name, { target: targetPath, deployedAt, phase: "done" }, { outcome: "healthy", current: installed });
      }
    } catch (err) {
      if (err instanceof ReleaseRefused) return this.refuse(d, err.message);
      throw err;
    }
    const activator = this.byKind.get(v.meta.kind)!;
    if (st?.phase !== "activating") {
      st = { target: targetPath, deployedAt, phase: "downloading", sha256: v.sha256, length: v.length, meta: v.meta };
      await this.state.set(name, st);
    }
    let file: string;
    try {
      file = await downloadTarget({
        http,
        target: { path: v.path, sha256: v.sha256, length: v.length },
        staging: join(this.opts.dir, "staging"),
        bytesPerSecond: this.opts.bytesPerSecond,
        signal,
        progress: (done, total) => void this.report({ name, targetPath, step: "downloading", bytesDone: done, bytesTotal: total }),
        verifying: () => void this.report({ name, targetPath, step: "verifying" }),
      });
    } catch (err) {
      if (err instanceof ArtifactRefused) return this.refuse(d, err.message);
      if (err instanceof NoSpaceError && this.lastNoSpace !== `${targetPath}\n${err.message}`) {
        // Said once per cause, not at every retry: the device waits for space and tries again.
        this.lastNoSpace = `${targetPath}\n${err.message}`;
        await this.report({ name, targetPath, step: "downloading", bytesDone: err.bytesDone, bytesTotal: v.length, error: err.message });
      }
      throw err;
    }
    this.lastNoSpace = undefined;
    st = { ...st, deployedAt, phase: "activating", meta: v.meta, sha256: v.sha256 };
    await this.state.set(name, st);
    const outcome = await activator.activate({ meta: v.meta, sha256: v.sha256, artifactPath: file }, this.events(name, targetPath), signal);
    await this.finish(name, st, outcome, true);
  }

  private async refuse(d: Desired, error: string): Promise<void> {
    const { name, targetPath } = d;
    this.opts.log.warn("release refused", { release: name, target: targetPath, err: error });
    await this.report({ name, targetPath, step: "failed", error, current: await this.installed(name) });
    await this.state.set(name, { target: targetPath, deployedAt: d.deployedAt, phase: "done", outcome: "failed" });
  }

  /** `activated`: the activator installed it anew, which runs it (whatever was stopped before). */
  private async finish(name: string, st: ReleaseProgressState, outcome: ActivationOutcome, activated = false): Promise<void> {
    await this.report({
      name,
      targetPath: st.target,
      step: outcome.outcome,
      error: outcome.outcome === "healthy" ? undefined : outcome.error,
      current: outcome.current,
    });
    await this.state.set(name, { target: st.target, deployedAt: st.deployedAt, phase: "done", outcome: outcome.outcome });
    // An activation runs what it ends on: an admin's stop (or undeploy) is carried out anew. Without
    // one (it was installed already), a stopped release is started by the control pass instead.
    const applied = (await this.controlState())[name];
    if (activated && applied && applied.state !== "running") await this.setControlState(name, { ...applied, state: "running" });
    if (st.sha256) await rm(join(this.opts.dir, "staging", st.sha256), { force: true });
    this.opts.log.info("release finished", { release: name, target: st.target, outcome: outcome.outcome });
  }
}

/** Crashes before the switch after which an activation counts as failed rather than tried again. */
const MAX_INTERRUPTIONS = 5;

/** A desired release: one deployment of a target, and whether it should run. */
interface Desired {
  name: string;
  targetPath: string;
  deployedAt: number;
  runState: "running" | "stopped" | "removed";
  restartGen: number;
  purgeData: boolean;
}

function sameDeployment(st: ReleaseProgressState | undefined, d: Desired): boolean {
  return st?.target === d.targetPath && (st.deployedAt ?? 0) === d.deployedAt;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
