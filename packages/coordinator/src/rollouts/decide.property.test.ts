import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { countDevices, moveCount } from "../store/index.ts";
import type { RolloutChanges, RolloutCounts, RolloutDeviceState, RolloutDeviceView, RolloutRow, RolloutSnapshot } from "../store/index.ts";
import { ActionRefused, advance, isTerminal, onAdminAction, onConnected, onStep, tally, type AdminAction } from "./decide.ts";

const RUNS = 300;
const runs = propertyRuns(RUNS);
const OFFLINE_AFTER = 1_000;
const IN_FLIGHT = new Set<RolloutDeviceState>(["notified", "downloading", "verifying", "activating", "health-checking"]);
const FINAL = new Set(["completed", "aborted", "failed"]);

/** A fleet and a rollout over it: wave sizes, limits, and how each device answers being notified. */
const setup = fc.record({
  waveSizes: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 4 }),
  maxParallel: fc.integer({ min: 0, max: 3 }),
  tolerated: fc.integer({ min: 0, max: 2 }),
  soakMs: fc.constantFrom(0, 500, 5_000),
  approveEachWave: fc.boolean(),
  deadlineMs: fc.option(fc.integer({ min: 1_000, max: 60_000 }), { nil: null }),
  online: fc.array(fc.boolean(), { minLength: 16, maxLength: 16 }),
  /** What the store makes of a notification: the device runs the release already, or it is gone. */
  notifyOutcome: fc.array(fc.constantFrom<RolloutDeviceState>("notified", "notified", "notified", "notified", "healthy", "skipped"), { minLength: 16, maxLength: 16 }),
});

const STEPS = ["checking", "downloading", "verifying", "activating", "health-checking", "healthy", "failed", "rolled-back", "bogus"];
const event = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant("step" as const), device: fc.nat(), step: fc.constantFrom(...STEPS), ours: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("tick" as const), dt: fc.constantFrom<number>(0, 100, 1_000, 10_000) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("connection" as const), device: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("admin" as const), action: fc.constantFrom<AdminAction>({ kind: "pause", by: "ann" }, { kind: "resume" }, { kind: "approve" }, { kind: "abort", rollBack: false, by: "ann" }) }) },
);

/** Counters without zero entries, for comparing. */
const normal = (c: RolloutCounts) =>
  Object.fromEntries(Object.entries(c).map(([w, s]) => [w, Object.fromEntries(Object.entries(s).filter(([, v]) => v !== 0))]).filter(([, s]) => Object.keys(s as object).length > 0));

type Setup = typeof setup extends fc.Arbitrary<infer S> ? S : never;

function start(s: Setup): { rollout: RolloutRow; devices: RolloutDeviceView[] } {
  const devices: RolloutDeviceView[] = [];
  s.waveSizes.forEach((size, w) => {
    for (let k = 0; k < size; k++) {
      const i = devices.length;
      devices.push({
        rolloutId: "r1", orgId: "o1", deviceId: `d${i}`, name: `dev-${i}`, wave: w + 1, position: i, state: "pending",
        bytesDone: 0, bytesTotal: 0, error: "", previousVersion: "", previousCounter: 0, rollbackCounter: 0, notifiedAt: null, updatedAt: 0,
        connected: s.online[i]!, lastSeenAt: s.online[i]! ? 0 : null, currentCounter: 0,
      });
    }
  });
  const rollout: RolloutRow = {
    id: "r1", orgId: "o1", releaseName: "app", releaseVersion: "2.0", releaseCounter: 5,
    spec: { releaseName: "app", releaseVersion: "2.0", selector: "", waves: s.waveSizes.map(String), maxParallel: s.maxParallel, failureThreshold: String(s.tolerated), soakMs: s.soakMs, approveEachWave: s.approveEachWave, deadlineMs: s.deadlineMs ?? 0 },
    waves: s.waveSizes.map((_, w) => ({ number: w + 1, entry: String(w + 1) })),
    ineligible: [], status: "running", reason: "", currentWave: 1, waveFinishedAt: null, approvedWave: 1,
    toleratedFailures: s.tolerated, deadlineAt: s.deadlineMs, createdBy: "ann", createdAt: 0, updatedAt: 0, version: 1,
  };
  return { rollout, devices };
}

/** Drives one rollout through events as the engine and store would, checking invariants at every transition. */
class Model {
  now = 0;
  readonly notified = new Set<string>();
  /** The wave counters as the store keeps them: moved by each applied change, never recounted. */
  readonly counts: RolloutCounts;
  constructor(
    readonly s: Setup,
    public rollout: RolloutRow,
    readonly devices: RolloutDeviceView[],
  ) {
    this.counts = countDevices(devices);
  }

  /** What the store reads for a transition: the rollout, its counters, and the device asked for. */
  snapshot(deviceId?: string): RolloutSnapshot {
    const device = this.devices.find((d) => d.deviceId === deviceId);
    return { rollout: this.rollout, counts: this.counts, ...(device ? { device: { ...device } } : {}) };
  }

  /** Moves a device as the store does, counters included. */
  private set(d: RolloutDeviceView, state: RolloutDeviceState): void {
    moveCount(this.counts, d.wave, d.state, state);
    d.state = state;
  }

  /** Applies a transition's changes as rollout-store.ts `transition` and rollout-notify.ts do. */
  apply(changes: RolloutChanges | undefined): void {
    const before = { rollout: { ...this.rollout }, states: this.devices.map((d) => d.state) };
    if (!changes) return;
    if (changes.rollout) this.rollout = { ...this.rollout, ...changes.rollout };
    for (const c of changes.devices ?? []) {
      const d = this.devices.find((x) => x.deviceId === c.deviceId)!;
      this.set(d, c.state);
    }
    if (changes.skipUnfinished !== undefined) for (const d of this.devices) if (!isTerminal(d.state)) this.set(d, "skipped");
    // The store's notify query: pending devices of the wave that are online (or the one that
    // just connected), in plan order, at most `limit`.
    const n = changes.notify;
    const picked = !n
      ? []
      : this.devices
          .filter((d) => d.wave === n.wave && d.state === "pending")
          .filter((d) => d.deviceId === n.deviceId || (n.wholeWave && d.connected && d.lastSeenAt !== null && d.lastSeenAt >= n.onlineSince))
          .slice(0, n.limit);
    for (const d of picked) {
      const id = d.deviceId;
      // Every device is decided once: notified at most once, only from pending, only while
      // running, only in the current wave, and only once every earlier wave has finished.
      expect(this.notified.has(id)).toBe(false);
      this.notified.add(id);
      expect(before.states[this.devices.indexOf(d)]).toBe("pending");
      expect(this.rollout.status).toBe("running");
      expect(d.wave).toBe(this.rollout.currentWave);
      for (const e of this.devices) if (e.wave < d.wave) expect(isTerminal(e.state)).toBe(true);
      this.set(d, this.s.notifyOutcome[this.devices.indexOf(d)]!);
      d.notifiedAt = this.now;
    }
    expect(changes.rollBack ?? []).toEqual([]);
    this.check(before);
  }

  check(before: { rollout: RolloutRow; states: RolloutDeviceState[] }): void {
    const r = this.rollout;
    // The counters kept change by change equal a recount of the devices.
    expect(normal(this.counts)).toEqual(normal(countDevices(this.devices)));
    // Never more than max-parallel installing.
    if (this.s.maxParallel > 0) expect(this.devices.filter((d) => IN_FLIGHT.has(d.state)).length).toBeLessThanOrEqual(this.s.maxParallel);
    // Never past the failure threshold while running.
    if (r.status === "running") expect(tally(this.devices).failed).toBeLessThanOrEqual(r.toleratedFailures);
    // A decision is never undone: final states and final statuses stay.
    this.devices.forEach((d, i) => {
      if (isTerminal(before.states[i]!)) expect(d.state).toBe(before.states[i]);
    });
    if (FINAL.has(before.rollout.status)) expect(r.status).toBe(before.rollout.status);
    if (r.status === "completed") for (const d of this.devices) expect(isTerminal(d.state)).toBe(true);
    // Waves only move forward, one at a time, and past approval only when approved.
    expect(r.currentWave).toBeGreaterThanOrEqual(before.rollout.currentWave);
    expect(r.currentWave).toBeLessThanOrEqual(r.waves.length);
    if (r.currentWave > before.rollout.currentWave && this.s.approveEachWave) expect(r.approvedWave).toBeGreaterThanOrEqual(r.currentWave);
    if (r.currentWave > before.rollout.currentWave) {
      for (const d of this.devices) if (d.wave < r.currentWave) expect(isTerminal(d.state)).toBe(true);
    }
  }

  refresh(): void {
    for (const d of this.devices) if (d.connected) d.lastSeenAt = this.now;
  }

  run(e: typeof event extends fc.Arbitrary<infer E> ? E : never): void {
    const n = this.devices.length;
    if (e.t === "tick") {
      this.now += e.dt;
      this.refresh();
      this.apply(advance(this.snapshot(), this.now, OFFLINE_AFTER));
    } else if (e.t === "connection") {
      const d = this.devices[e.device % n]!;
      d.connected = !d.connected;
      if (d.connected) d.lastSeenAt = this.now;
      // The engine hears of a device opening its Watch stream; one going away surfaces on a tick.
      this.apply(d.connected ? onConnected(this.snapshot(d.deviceId), d.deviceId, this.now, OFFLINE_AFTER) : advance(this.snapshot(), this.now, OFFLINE_AFTER));
    } else if (e.t === "step") {
      const d = this.devices[e.device % n]!;
      const target = e.ours ? "app/5/app.tar" : "app/4/app.tar";
      this.apply(onStep(this.snapshot(d.deviceId), d.deviceId, { name: "app", targetPath: target, step: e.step, bytesDone: 0, bytesTotal: 0, error: "" }, this.now, OFFLINE_AFTER));
    } else {
      let changes: RolloutChanges | undefined;
      try {
        changes = onAdminAction(this.snapshot(), e.action, this.now, OFFLINE_AFTER);
      } catch (err) {
        expect(err).toBeInstanceOf(ActionRefused);
        return;
      }
      this.apply(changes);
    }
  }
}

describe("rollout decision properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("never installs on more than max-parallel devices, never goes on past the failure threshold, decides every device once", () => {
    fc.assert(
      fc.property(setup, fc.array(event, { maxLength: 60 }), (s, events) => {
        const { rollout, devices } = start(s);
        const m = new Model(s, rollout, devices);
        m.apply(advance(m.snapshot(), m.now, OFFLINE_AFTER));
        for (const e of events) m.run(e);

        // Then every device comes online and succeeds, and the admin approves and resumes:
        // the rollout must end, with every device decided.
        for (const d of m.devices) d.connected = true;
        for (let i = 0; i < 4 * (m.devices.length + m.rollout.waves.length) && !FINAL.has(m.rollout.status); i++) {
          if (m.rollout.status === "paused") m.run({ t: "admin", action: { kind: "resume" } });
          m.run({ t: "admin", action: { kind: "approve" } });
          for (const d of m.devices) if (IN_FLIGHT.has(d.state)) m.run({ t: "step", device: m.devices.indexOf(d), step: "healthy", ours: true });
          m.run({ t: "tick", dt: s.soakMs + 1 });
        }
        expect(FINAL.has(m.rollout.status)).toBe(true);
        if (m.rollout.status !== "aborted") {
          for (const d of m.devices) expect(isTerminal(d.state)).toBe(true);
          // Only a notification (or the deadline's skip) takes a device out of pending.
          for (const d of m.devices) if (d.state !== "skipped") expect(m.notified.has(d.deviceId)).toBe(true);
        }
      }),
      runs,
    );
  });
});
