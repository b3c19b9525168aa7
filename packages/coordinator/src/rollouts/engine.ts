import type { agentv1, Logger } from "@flotilla/protocol";
import type { RolloutChanges, RolloutRow, RolloutSnapshot, Store, TransitionRead } from "../store/index.ts";
import { leaseTtlMs, type Leases } from "../server/lease.ts";
import { advance, onConnected, onStep, type ReleaseStepEvent } from "./decide.ts";

/** What the agent API tells the rollout engine; see context.ts `rolloutEvents`. */
export interface RolloutEvents {
  /**
   * A device's release step was recorded (after validation, see releases/progress.ts). Resolves
   * once the step is applied to the device's rollout (or it is in none); rejects when that
   * transition failed. The agent API acknowledges the step only after: a replica killed in
   * between leaves the step unacknowledged, so the agent sends it again, to any replica.
   */
  releaseStep(orgId: string, deviceId: string, progress: agentv1.ReleaseProgress): Promise<void>;
  /** A device opened its Watch stream. */
  deviceConnected(orgId: string, deviceId: string): void;
}

export interface RolloutEngineOptions {
  /** A device not seen for this long counts as offline (the coordinator's --offline-after-ms). */
  offlineAfterMs: number;
  /**
   * How often every active rollout is re-evaluated: soak ends, deadlines, devices going offline,
   * and changes made by other replicas all surface within one tick.
   */
  tickMs: number;
  /** Replicas sharing the database: the tick runs on the holder of lease "rollout-tick" only. */
  leases?: Leases;
}

/** How many of a device's newest release steps the replay at start looks through for the rollout's release. */
const REPLAY_STEPS = 20;

type Decide = (s: RolloutSnapshot, now: number) => RolloutChanges | undefined;

/**
 * Drives rollouts. Reacts to events (release steps, devices connecting, admin actions) and a
 * periodic tick; every transition locks the rollout in its store transaction, so several
 * replicas may drive the same rollout without conflict (each transition re-reads under the lock).
 * Within this process transitions run one at a time, in the order they were asked for; those
 * asked for while one commits share the next commit.
 *
 * No event costs more in a bigger rollout: a transition reads the rollout row with its wave
 * counters and only the device the event is about (a release step, a connection); the tick reads
 * no device unless the current wave has pending devices and a free slot, and then only those
 * pending devices of that wave that are online, through an index.
 */
export class RolloutEngine implements RolloutEvents {
  /** Transitions under way, for close(). */
  private readonly running = new Set<Promise<unknown>>();
  /** Release steps being applied, by device and step: a retried report waits for the same one. */
  private readonly steps = new Map<string, Promise<void>>();
  private readonly listeners = new Set<(orgId: string, id: string) => void>();
  private readonly commitListeners = new Set<(orgId: string, id: string) => void>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly opts: RolloutEngineOptions,
  ) {}

  /** Resumes every active rollout (after a restart, wherever it stood) and starts the tick. */
  start(): void {
    this.background(this.replayLastSteps(), "replay of release steps");
    this.tick();
    this.timer = setInterval(() => this.tick(), this.opts.tickMs);
    this.timer.unref();
  }

  /**
   * A release step is stored with the agent's report and applied to its rollout in the next
   * transaction. The agent API acknowledges the step only once it is applied, so a kill in
   * between has the agent send it again; a coordinator before that change acknowledged first,
   * leaving a device killed in between in flight for ever. At start, each in-flight device of an
   * active rollout has its newest step of the rollout's release applied again (a step already
   * applied changes nothing). Reads the in-flight devices only, not the whole rollout.
   */
  private async replayLastSteps(): Promise<void> {
    for (const { orgId, id } of await this.store.rollouts.activeRollouts()) {
      const rollout = await this.store.rollouts.getRollout(orgId, id);
      if (!rollout) continue;
      for (const deviceId of await this.store.rollouts.inFlightDevices(orgId, id)) {
        if (this.closed) return;
        const last = (await this.store.releases.listReleaseSteps(orgId, deviceId, REPLAY_STEPS)).filter((s) => s.name === rollout.releaseName).at(-1);
        if (!last) continue;
        const step: ReleaseStepEvent = { name: last.name, targetPath: last.targetPath, step: last.step, bytesDone: last.bytesDone, bytesTotal: last.bytesTotal, error: last.error };
        this.background(this.run(orgId, id, (s, now) => onStep(s, deviceId, step, now, this.opts.offlineAfterMs), { deviceId }), deviceId);
      }
    }
  }

  /** Stops the tick and waits for transitions under way, so the store can close after it. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await Promise.allSettled([...this.running]);
  }

  /**
   * Calls `fn` after every committed change of a rollout made by this process, and after every
   * change another replica made that `changed` passes on (rollout watch streams listen here).
   */
  onChange(fn: (orgId: string, id: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Calls `fn` after every committed change made by this process only (told to other replicas). */
  onCommit(fn: (orgId: string, id: string) => void): () => void {
    this.commitListeners.add(fn);
    return () => this.commitListeners.delete(fn);
  }

  /** Another replica changed rollout `id`: its watchers here look again now. */
  changed(orgId: string, id: string): void {
    for (const fn of this.listeners) fn(orgId, id);
  }

  /**
   * Runs one transition of rollout `id`, after any already requested in this process: the
   * store applies transitions in the order they were asked for (several share a commit), so
   * they need not wait for each other here. Resolves to the rollout after it; rejects with what
   * `decide` threw.
   */
  run(orgId: string, id: string, decide: Decide, read: TransitionRead = {}): Promise<RolloutRow | undefined> {
    const next = (async () => {
      const res = await this.store.rollouts.transition(orgId, id, Date.now(), (s) => decide(s, Date.now()), read);
      if (res?.changed) {
        if (res.rollout.status !== "running") this.log.info("rollout status", { rollout: id, status: res.rollout.status, reason: res.rollout.reason });
        for (const fn of this.listeners) fn(orgId, id);
        for (const fn of this.commitListeners) fn(orgId, id);
      }
      return res?.rollout;
    })();
    this.running.add(next);
    void next.finally(() => this.running.delete(next)).catch(() => undefined);
    return next;
  }

  /** Moves a rollout forward as far as it can go now. */
  kick(orgId: string, id: string): void {
    this.background(this.run(orgId, id, (s, now) => advance(s, now, this.opts.offlineAfterMs)), id);
  }

  async releaseStep(orgId: string, deviceId: string, p: agentv1.ReleaseProgress): Promise<void> {
    if (this.closed) throw new Error("the rollout engine is closing");
    const step: ReleaseStepEvent = {
      name: p.name,
      targetPath: p.targetPath,
      step: p.step,
      bytesDone: Number(p.bytesDone),
      bytesTotal: Number(p.bytesTotal),
      error: p.error.slice(0, 4096),
    };
    // A report retried while its first try still waits in the queue (the agent timed out) joins
    // that try's transition instead of queueing the same step again behind it.
    const key = `${deviceId}\n${JSON.stringify(step)}`;
    const queued = this.steps.get(key);
    if (queued) return queued;
    const job = (async () => {
      const id = await this.store.rollouts.claimOf(orgId, deviceId);
      if (id) await this.run(orgId, id, (s, now) => onStep(s, deviceId, step, now, this.opts.offlineAfterMs), { deviceId });
    })();
    this.steps.set(key, job);
    try {
      await job;
    } finally {
      this.steps.delete(key);
    }
  }

  deviceConnected(orgId: string, deviceId: string): void {
    if (this.closed) return;
    this.background(
      this.store.rollouts.claimOf(orgId, deviceId).then((id) =>
        id ? this.run(orgId, id, (s, now) => onConnected(s, deviceId, now, this.opts.offlineAfterMs), { deviceId }) : undefined,
      ),
      deviceId,
    );
  }

  private tick(): void {
    if (this.closed) return;
    this.background(
      (async () => {
        // One replica ticks (transitions stay correct on any replica: they lock the rollout row;
        // the lease only spares the others the same work).
        if (this.opts.leases && !(await this.opts.leases.hold("rollout-tick", leaseTtlMs(this.opts.tickMs)))) return;
        for (const r of await this.store.rollouts.activeRollouts()) this.kick(r.orgId, r.id);
      })(),
      "tick",
    );
  }

  private background(p: Promise<unknown>, what: string): void {
    p.catch((err: unknown) => {
      if (!this.closed) this.log.warn("rollout transition failed", { what, err: String(err) });
    });
  }
}
