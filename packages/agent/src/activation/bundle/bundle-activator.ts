import { mkdir, rm } from "node:fs/promises";
import { resolve } from "node:path";
import type { Logger } from "@flotilla/protocol/agent";
import type { ActivationEvents, ActivationOutcome, ActivationRequest, Activator, ControlAction, InstalledRelease } from "../activator.ts";
import { exists, removeDurable, swapSymlink, writeFileDurable } from "../../durable.ts";
import { checkHealth, defaultHealthTiming, type HealthTiming } from "./health.ts";
import { installRelease, prune, removeTempFiles } from "./install.ts";
import { clearJournal, readJournal, writeJournal, type JournalEntry } from "./journal.ts";
import { installedOf, listNames, NameLayout, releaseId, type ReleaseRecord } from "./layout.ts";
import { stopOrphan, sweepReleaseProcesses } from "./process-group.ts";
import { Supervisor } from "./supervisor.ts";
import { defaultUnpackLimits, type UnpackLimits } from "./unpack.ts";

/** Options of a BundleActivator. Durations in milliseconds. */
export interface BundleActivatorOptions {
  /** The directory it owns, e.g. `<agent state dir>/bundles`; one subdirectory per release name. */
  dir: string;
  log: Logger;
  /**
   * The environment of supervised processes and health commands, to which FLOTILLA_RELEASE,
   * FLOTILLA_VERSION, FLOTILLA_RELEASE_DIR and FLOTILLA_DATA_DIR are added. Nothing of the agent's own environment
   * leaks in unless passed here. Default: a standard PATH only.
   */
  env?: Record<string, string>;
  /** First restart delay after the process exits; doubles per quick failure. Default 1 s. */
  backoffMinMs?: number;
  /** Restart delay cap; a run longer than this resets the backoff. Default 60 s. */
  backoffMaxMs?: number;
  /** SIGTERM-to-SIGKILL grace when stopping a process group. Default 10 s. */
  killGraceMs?: number;
  /** Output lines longer than this are split. Default 16 KiB. */
  maxLineBytes?: number;
  health?: Partial<HealthTiming>;
  unpackLimits?: Partial<UnpackLimits>;
  /**
   * Test hook, awaited after each journal step is durable and at points inside steps
   * (`unpacking`, `unpacked`, `switching`, `stopped`, `swapped`, `health-checking`, `started`,
   * `rolling-back`, `rolled-back-swapped`, `confirmed`): crash tests pause there and `kill -9`.
   */
  onStep?: (name: string, point: string) => Promise<void> | void;
}

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const never = new AbortController().signal;

/**
 * Activates `kind: "bundle"` releases: unpack into `releases/<counter>-<sha>/`, swap the
 * `current` symlink, supervise the release's process, check health, confirm or roll back;
 * a journal per name makes every step recoverable after `kill -9` (see docs/bundles.md).
 */
export class BundleActivator implements Activator {
  readonly kind = "bundle" as const;
  private readonly supervisors = new Map<string, Supervisor>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly timing: HealthTiming;
  private readonly limits: UnpackLimits;
  private closed = false;

  constructor(private readonly opts: BundleActivatorOptions) {
    // Absolute, so FLOTILLA_RELEASE_DIR means the same to the service wherever the agent runs.
    this.opts = { ...opts, dir: resolve(opts.dir) };
    this.timing = { ...defaultHealthTiming, ...opts.health };
    this.limits = { ...defaultUnpackLimits, ...opts.unpackLimits };
  }

  async available(): Promise<boolean> {
    return process.platform === "linux";
  }

  async installed(): Promise<InstalledRelease[]> {
    const out: InstalledRelease[] = [];
    for (const name of await listNames(this.opts.dir)) {
      const rec = await this.currentRecord(new NameLayout(this.opts.dir, name));
      if (rec) out.push(installedOf(rec));
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    const sups = [...this.supervisors.values()];
    this.supervisors.clear();
    await Promise.all(sups.map((s) => s.stop()));
  }

  activate(req: ActivationRequest, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome> {
    const { meta, sha256 } = req;
    if (meta.kind !== "bundle") throw new Error(`bundle activator cannot activate a ${meta.kind} release`);
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error("sha256 must be 64 lowercase hex digits");
    if (req.artifactPath === undefined) throw new Error("a bundle release needs its staged artifact");
    const layout = new NameLayout(this.opts.dir, meta.name);
    const artifact = req.artifactPath;
    return this.locked(meta.name, () => this.install(layout, { id: releaseId(meta, sha256), meta, sha256 }, artifact, events, signal));
  }

  async recover(events: ActivationEvents): Promise<Map<string, ActivationOutcome>> {
    const outcomes = new Map<string, ActivationOutcome>();
    for (const name of await listNames(this.opts.dir)) {
      const layout = new NameLayout(this.opts.dir, name);
      const outcome = await this.locked(name, () => this.recoverName(layout, events));
      if (outcome) outcomes.set(name, outcome);
    }
    return outcomes;
  }

  async control(name: string, action: ControlAction, opts: { purgeData: boolean }, events: ActivationEvents): Promise<void> {
    const layout = new NameLayout(this.opts.dir, name);
    await this.locked(name, async () => {
      if (action === "remove") return this.remove(layout, opts.purgeData);
      if (action === "stop") {
        if (await exists(layout.dir)) await writeFileDurable(layout.stoppedPath, "", { mode: 0o644 });
        await this.stopRunning(layout);
        return;
      }
      const cur = await this.currentRecord(layout);
      if (!cur) throw new Error(`no ${name} release is installed`);
      await removeDurable(layout.stoppedPath);
      if (action === "start" && this.supervisors.get(name)?.state === "running") return;
      await this.stopRunning(layout);
      await this.start(layout, cur, events);
    });
  }

  /** Stops the release and removes its files; its data directory too with `purgeData`. */
  private async remove(layout: NameLayout, purgeData: boolean): Promise<void> {
    await this.stopRunning(layout);
    if (!(await exists(layout.dir))) return;
    if (purgeData) {
      await rm(layout.dir, { recursive: true, force: true });
      return;
    }
    for (const path of [layout.currentLink, layout.previousLink, layout.journalPath, layout.stoppedPath]) await removeDurable(path);
    await rm(layout.releasesDir, { recursive: true, force: true });
  }

  private async install(layout: NameLayout, to: ReleaseRecord, artifact: string, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome> {
    const name = to.meta.name;
    await layout.ensure();
    if (await readJournal(layout)) await this.recoverName(layout, events);
    const from = await this.currentRecord(layout);
    const refuse = (error: string): ActivationOutcome => {
      events.step("failed", error);
      return { outcome: "failed", error, current: from && installedOf(from) };
    };
    if (!to.meta.run && !to.meta.singleFile) return refuse("a bundle release needs a run command");
    if (from && to.meta.counter < from.meta.counter && !to.meta.allowDowngrade) {
      return refuse(`counter ${to.meta.counter} is lower than the installed ${from.meta.counter}`);
    }
    if (from?.id === to.id && this.supervisors.has(name)) {
      events.step("healthy");
      return { outcome: "healthy", current: installedOf(from) };
    }
    events.step("activating");
    // A new activation runs the release, whatever an admin stopped before.
    await removeDurable(layout.stoppedPath);
    const j: JournalEntry = { step: "unpacking", to, ...(from && { from }), previousBefore: await layout.previousId() };
    await this.journal(layout, j);
    try {
      await installRelease(layout, to, artifact, this.limits);
      if (signal.aborted) throw new Error("activation aborted");
    } catch (err) {
      if (from?.id !== to.id) await prune(layout, [from?.id, j.previousBefore]);
      await clearJournal(layout);
      return refuse((err as Error).message);
    }
    await this.hook(name, "unpacked");
    await this.journal(layout, { ...j, step: "switching" });
    await this.stopRunning(layout);
    await this.hook(name, "stopped");
    if (from && from.id !== to.id) await swapSymlink(layout.previousLink, layout.linkTarget(from.id));
    await swapSymlink(layout.currentLink, layout.linkTarget(to.id));
    await this.hook(name, "swapped");
    return this.checkNew(layout, j, events, signal);
  }

  /** With `current` on the new release: start it, check it, confirm or roll back. */
  private async checkNew(layout: NameLayout, j: JournalEntry, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome> {
    await this.journal(layout, { ...j, step: "health-checking" });
    events.step("health-checking");
    const sup = await this.start(layout, j.to, events);
    await this.hook(layout.name, "started");
    const why = await checkHealth(j.to.meta.health, sup, layout.releaseDir(j.to.id), this.env(j.to, layout), this.timing, signal);
    if (why !== undefined) return this.rollBack(layout, { ...j, step: "rolling-back", reason: why }, events);
    await this.journal(layout, { ...j, step: "confirmed" });
    await prune(layout, [j.to.id, j.from?.id]);
    await clearJournal(layout);
    events.step("healthy");
    return { outcome: "healthy", current: installedOf(j.to) };
  }

  /** Stops the new release and goes back to `j.from` (or to nothing, for a first install). */
  private async rollBack(layout: NameLayout, j: JournalEntry, events: ActivationEvents): Promise<ActivationOutcome> {
    const reason = j.reason ?? "rolled back";
    await this.journal(layout, j);
    await this.stopRunning(layout);
    const from = j.from;
    if (!from) {
      await removeDurable(layout.currentLink);
      await removeDurable(layout.previousLink);
      await prune(layout, []);
      await clearJournal(layout);
      events.step("failed", reason);
      return { outcome: "failed", error: reason, current: undefined };
    }
    await swapSymlink(layout.currentLink, layout.linkTarget(from.id));
    const prev = j.previousBefore !== from.id ? j.previousBefore : undefined;
    if (prev !== undefined && (await layout.readRecord(prev))) await swapSymlink(layout.previousLink, layout.linkTarget(prev));
    else await removeDurable(layout.previousLink);
    await this.hook(layout.name, "rolled-back-swapped");
    const sup = await this.start(layout, from, events);
    const again = await checkHealth(from.meta.health, sup, layout.releaseDir(from.id), this.env(from, layout), this.timing, never);
    await prune(layout, [from.id, prev]);
    await clearJournal(layout);
    if (again !== undefined) {
      const error = `${reason}; rolled back to ${from.meta.version}, which is unhealthy too: ${again}`;
      events.step("failed", error);
      return { outcome: "failed", error, current: installedOf(from) };
    }
    events.step("rolled-back", reason);
    return { outcome: "rolled-back", error: reason, current: installedOf(from) };
  }

  /** Finishes or undoes what a crash interrupted for one name, then runs its current release. */
  private async recoverName(layout: NameLayout, events: ActivationEvents): Promise<ActivationOutcome | undefined> {
    await this.stopRunning(layout);
    const swept = await sweepReleaseProcesses(layout.releasesDir, this.opts.killGraceMs ?? 10_000);
    if (swept.length > 0) this.opts.log.warn("stopped untracked processes of this release", { name: layout.name, groups: swept });
    await removeTempFiles(layout);
    const j = await readJournal(layout);
    const step = j?.step;
    if (j && (step === "health-checking" || (step === "switching" && (await layout.currentId()) === j.to.id))) {
      this.opts.log.info("recovering: re-checking the new release", { name: layout.name, version: j.to.meta.version });
      return this.checkNew(layout, j, events, never);
    }
    if (j && step === "rolling-back") {
      this.opts.log.info("recovering: finishing the rollback", { name: layout.name, version: j.to.meta.version });
      return this.rollBack(layout, j, events);
    }
    let interrupted: string | undefined;
    if (j && (step === "unpacking" || step === "switching")) {
      // The switch did not happen: abandon the new release, keep (or restart) the old one.
      interrupted = `the agent stopped while ${step} ${j.to.meta.version}; staying on the installed release`;
      const prev = j.previousBefore;
      if (prev !== undefined && (await layout.readRecord(prev))) await swapSymlink(layout.previousLink, layout.linkTarget(prev));
      else await removeDurable(layout.previousLink);
      await prune(layout, [await layout.currentId(), prev]);
    } else if (j) {
      await prune(layout, [await layout.currentId(), await layout.previousId()]);
    }
    if (j) await clearJournal(layout);
    const cur = await this.currentRecord(layout);
    if (!cur) return interrupted ? { outcome: "failed", error: interrupted, current: undefined, interrupted: true } : undefined;
    if (await exists(layout.stoppedPath)) {
      this.opts.log.info("release stays stopped, as an admin asked", { name: layout.name, version: cur.meta.version });
      return interrupted ? { outcome: "rolled-back", error: interrupted, current: installedOf(cur), interrupted: true } : undefined;
    }
    const sup = await this.start(layout, cur, events);
    const why = await checkHealth(cur.meta.health, sup, layout.releaseDir(cur.id), this.env(cur, layout), this.timing, never);
    if (why !== undefined) {
      // Nothing to go back to outside an activation: keep supervising it, and say so.
      return { outcome: "failed", error: `${cur.meta.version} is unhealthy after restart: ${why}`, current: installedOf(cur) };
    }
    if (interrupted) return { outcome: "rolled-back", error: interrupted, current: installedOf(cur), interrupted: true };
    return { outcome: "healthy", current: installedOf(cur) };
  }

  private async currentRecord(layout: NameLayout): Promise<ReleaseRecord | undefined> {
    const id = await layout.currentId();
    return id === undefined ? undefined : layout.readRecord(id);
  }

  private env(rec: ReleaseRecord, layout: NameLayout): Record<string, string> {
    return {
      ...(this.opts.env ?? { PATH: DEFAULT_PATH }),
      FLOTILLA_RELEASE: rec.meta.name,
      FLOTILLA_VERSION: rec.meta.version,
      FLOTILLA_RELEASE_DIR: layout.releaseDir(rec.id),
      FLOTILLA_DATA_DIR: layout.dataDir,
    };
  }

  private async start(layout: NameLayout, rec: ReleaseRecord, events: ActivationEvents): Promise<Supervisor> {
    const name = rec.meta.name;
    // An activation still running at shutdown stops here; its journal lets recover() finish it.
    if (this.closed) throw new Error("bundle activator is closed");
    await mkdir(layout.dataDir, { recursive: true, mode: 0o755 });
    const sup = new Supervisor({
      name,
      release: rec.id,
      command: rec.meta.run ?? `exec ./${name}`,
      cwd: layout.releaseDir(rec.id),
      env: this.env(rec, layout),
      restart: rec.meta.restart,
      pidPath: layout.pidPath,
      output: (stream, line) => events.output(name, stream, line),
      log: this.opts.log.child({ release: name, version: rec.meta.version }),
      backoffMinMs: this.opts.backoffMinMs ?? 1_000,
      backoffMaxMs: this.opts.backoffMaxMs ?? 60_000,
      killGraceMs: this.opts.killGraceMs ?? 10_000,
      maxLineBytes: this.opts.maxLineBytes ?? 16 * 1024,
    });
    this.supervisors.set(name, sup);
    await sup.start();
    return sup;
  }

  /** Stops this name's process: ours, or an orphan a killed agent left (found by its pidfile). */
  private async stopRunning(layout: NameLayout): Promise<void> {
    const sup = this.supervisors.get(layout.name);
    this.supervisors.delete(layout.name);
    await sup?.stop();
    await stopOrphan(layout.pidPath, this.opts.killGraceMs ?? 10_000);
  }

  private async journal(layout: NameLayout, j: JournalEntry): Promise<void> {
    await writeJournal(layout, j);
    await this.hook(layout.name, j.step);
  }

  private async hook(name: string, point: string): Promise<void> {
    await this.opts.onStep?.(name, point);
  }

  private locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.locks.set(name, next);
    return next;
  }
}
