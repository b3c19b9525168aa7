import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { adminv1, isReissueOf, newId, parseReleaseMeta, Wakeup } from "@flotilla/protocol";
import { adminOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { ReleaseRow, RolloutDevicePage, RolloutDeviceRow, RolloutDeviceState, RolloutRow } from "../store/index.ts";
import { ActionRefused, advance, onAdminAction, readFor, type AdminAction } from "./decide.ts";
import type { RolloutEngine } from "./engine.ts";
import { planFor } from "./planning.ts";
import { planView, rolloutView } from "./view.ts";
import { toleratedFailures } from "./waves.ts";

const ROLLOUT_ID = /^ro_[A-Za-z0-9_-]{1,64}$/;
const LIST_LIMIT = 200;
/**
 * Devices in one answer that carries a rollout: GetRollout's page size when none (or a larger one)
 * is asked for, and all that start, pause, resume, approve, abort and each watch snapshot carry.
 * About 200 bytes a device, so a page stays far below the message limit.
 */
export const DEVICE_PAGE = 1000;
const DEVICE_STATES = new Set<string>([
  "pending",
  "notified",
  "downloading",
  "verifying",
  "activating",
  "health-checking",
  "healthy",
  "failed",
  "rolled-back",
  "skipped",
  "rolling-back",
] satisfies RolloutDeviceState[]);
const PAGE_TOKEN = /^(\d{1,9})\.(\d{1,9})\.([^]{1,256})$/;
const FINAL = new Set(["completed", "aborted", "failed"]);
const ACTIVE = new Set(["running", "paused"]);
/** At most this many re-signed releases in one abort (one per earlier release the devices ran). */
const MAX_REISSUED = 256;

/** The admin API of rollouts; every transition goes through the engine. */
export function rolloutService(ctx: ServiceContext, engine: RolloutEngine, opts: { watchRefreshMs: number }): ServiceImpl<typeof adminv1.RolloutService> {
  const { store } = ctx;

  async function load(hctx: HandlerContext, id: string): Promise<{ orgId: string; rollout: RolloutRow }> {
    const { orgId } = adminOf(hctx);
    if (!ROLLOUT_ID.test(id)) throw new ConnectError(`invalid rollout id ${JSON.stringify(id.slice(0, 80))}`, Code.InvalidArgument);
    const rollout = await store.rollouts.getRollout(orgId, id);
    if (!rollout) throw new ConnectError(`no rollout ${id}`, Code.NotFound);
    return { orgId, rollout };
  }

  /**
   * The rollout with its counts (from its wave counters, never from reading every device) and one
   * page of its devices; `nextPageToken` is non-empty when more devices follow.
   */
  async function full(orgId: string, r: RolloutRow, page: RolloutDevicePage = { limit: DEVICE_PAGE }): Promise<{ rollout: adminv1.Rollout; nextPageToken: string }> {
    // One more than the page: whether devices follow, so no list is cut silently.
    const rows = await store.rollouts.listRolloutDevices(orgId, r.id, { ...page, limit: page.limit + 1 });
    const devices = rows.slice(0, page.limit);
    const counts = (await store.rollouts.rolloutCounts(orgId, r.id)) ?? {};
    const last = devices.at(-1);
    return { rollout: rolloutView(r, counts, devices), nextPageToken: rows.length > page.limit && last ? `${last.wave}.${last.position}.${last.deviceId}` : "" };
  }

  /** GetRollout's page from its request, refusing what it cannot mean. */
  function pageOf(req: adminv1.GetRolloutRequest): RolloutDevicePage {
    const page: RolloutDevicePage = { limit: Math.min(req.pageSize || DEVICE_PAGE, DEVICE_PAGE) };
    if (req.pageToken) {
      const m = PAGE_TOKEN.exec(req.pageToken);
      if (!m) throw new ConnectError("invalid page_token: pass next_page_token of the previous page", Code.InvalidArgument);
      page.after = { wave: Number(m[1]), position: Number(m[2]), deviceId: m[3]! };
    }
    if (req.state) {
      if (!DEVICE_STATES.has(req.state)) throw new ConnectError(`invalid state ${JSON.stringify(req.state.slice(0, 40))}: one of ${[...DEVICE_STATES].join(", ")}`, Code.InvalidArgument);
      page.state = req.state as RolloutDeviceState;
    }
    if (req.wave) page.wave = req.wave;
    return page;
  }

  async function act(hctx: HandlerContext, id: string, action: AdminAction): Promise<{ rollout: adminv1.Rollout }> {
    const { orgId } = await load(hctx, id);
    try {
      const r = await engine.run(orgId, id, (s, now) => onAdminAction(s, action, now, ctx.offlineAfterMs), readFor(action));
      if (!r) throw new ConnectError(`no rollout ${id}`, Code.NotFound);
      return { rollout: (await full(orgId, r)).rollout };
    } catch (err) {
      if (err instanceof ActionRefused) throw new ConnectError(err.message, Code.FailedPrecondition);
      throw err;
    }
  }

  return {
    async planRollout(req, hctx) {
      const { orgId } = adminOf(hctx);
      return { plan: planView(await planFor(store, orgId, req.spec, Date.now(), ctx.offlineAfterMs)) };
    },

    async startRollout(req, hctx) {
      const admin = adminOf(hctx);
      const now = Date.now();
      const planned = await planFor(store, admin.orgId, req.spec, now, ctx.offlineAfterMs);
      const { spec, release, plan } = planned;
      const id = `ro_${newId(12)}`;
      const rollout: RolloutRow = {
        id,
        orgId: admin.orgId,
        releaseName: release.name,
        releaseVersion: release.version,
        releaseCounter: release.counter,
        spec,
        waves: plan.waves.map((w) => ({ number: w.number, entry: w.entry })),
        ineligible: plan.ineligible.map((i) => ({ id: i.device.id, name: i.device.name, reason: i.reason })),
        status: "running",
        reason: "",
        currentWave: 1,
        waveFinishedAt: null,
        approvedWave: 1,
        toleratedFailures: toleratedFailures(spec.failureThreshold, plan.total),
        deadlineAt: spec.deadlineMs > 0 ? now + spec.deadlineMs : null,
        createdBy: admin.actor,
        createdAt: now,
        updatedAt: now,
        version: 1,
      };
      const devices: RolloutDeviceRow[] = plan.waves.flatMap((w) =>
        w.devices.map((d, position) => ({
          rolloutId: id,
          orgId: admin.orgId,
          deviceId: d.id,
          name: d.name,
          wave: w.number,
          position,
          state: "pending" as const,
          bytesDone: 0,
          bytesTotal: 0,
          error: "",
          previousVersion: "",
          previousCounter: 0,
          rollbackCounter: 0,
          notifiedAt: null,
          updatedAt: now,
        })),
      );
      let created;
      try {
        created = await store.rollouts.createRollout(rollout, devices);
      } catch {
        // Another rollout claimed one of these devices between our check and our insert (the
        // claim's primary key refused ours, and nothing was written): once more, the check
        // inside the transaction now sees that claim and names it.
        created = await store.rollouts.createRollout(rollout, devices);
      }
      if (!created.ok) {
        const holder = await store.rollouts.getRollout(admin.orgId, created.rolloutId);
        const why = holder && !ACTIVE.has(holder.status)
          ? `which was ${holder.status} and is still returning it to its previous release: wait for the device to report it`
          : "which is still active: wait for it to finish, or abort it";
        throw new ConnectError(`device ${created.deviceName} is already in rollout ${created.rolloutId}, ${why}`, Code.FailedPrecondition);
      }
      ctx.log.info("rollout started", { rollout: id, release: `${release.name}@${release.version}`, devices: plan.total, waves: plan.waves.length });
      const started = (await engine.run(admin.orgId, id, (s, t) => advance(s, t, ctx.offlineAfterMs))) ?? rollout;
      return { rollout: (await full(admin.orgId, started)).rollout, plan: planView(planned) };
    },

    async listRollouts(req, hctx) {
      const { orgId } = adminOf(hctx);
      const size = Math.min(req.pageSize || LIST_LIMIT, LIST_LIMIT);
      let before: { createdAt: number; id: string } | undefined;
      if (req.pageToken) {
        const [at, id] = req.pageToken.split(".");
        if (!at || !id || !/^\d+$/.test(at)) throw new ConnectError("invalid page_token: pass next_page_token of the previous page", Code.InvalidArgument);
        before = { createdAt: Number(at), id };
      }
      // One more than the page: whether older rollouts follow, so no list is cut silently.
      const rows = await store.rollouts.listRollouts(orgId, size + 1, before);
      const page = rows.slice(0, size);
      const out: adminv1.Rollout[] = [];
      // Counts from each rollout's wave counters: listing does not read any rollout's devices.
      for (const r of page) out.push(rolloutView(r, (await store.rollouts.rolloutCounts(orgId, r.id)) ?? {}));
      const last = page.at(-1);
      return { rollouts: out, nextPageToken: rows.length > size && last ? `${last.createdAt}.${last.id}` : "" };
    },

    async getRollout(req, hctx) {
      const { orgId, rollout } = await load(hctx, req.id);
      return full(orgId, rollout, pageOf(req));
    },

    pauseRollout: (req, hctx) => act(hctx, req.id, { kind: "pause", by: adminOf(hctx).actor }),
    resumeRollout: (req, hctx) => act(hctx, req.id, { kind: "resume" }),
    approveWave: (req, hctx) => act(hctx, req.id, { kind: "approve" }),
    async abortRollout(req, hctx) {
      if (!req.rollBack) return act(hctx, req.id, { kind: "abort", rollBack: false, by: adminOf(hctx).actor });
      const { orgId, rollout } = await load(hctx, req.id);
      const returnTo = await returnTargets(ctx, orgId, rollout, req.reissued);
      return act(hctx, req.id, { kind: "abort", rollBack: true, by: adminOf(hctx).actor, returnTo });
    },

    async *watchRollout(req, hctx) {
      const { orgId } = await load(hctx, req.id);
      const changed = new Wakeup();
      const stop = engine.onChange((_o, id) => {
        if (id === req.id) changed.notify();
      });
      try {
        let sent = -1;
        while (!hctx.signal.aborted) {
          const r = await store.rollouts.getRollout(orgId, req.id);
          if (!r) return;
          if (r.version !== sent) {
            sent = r.version;
            yield await full(orgId, r);
          }
          if (FINAL.has(r.status)) return;
          // Changes made by this process wake us at once; the refresh catches other replicas'.
          await changed.wait(hctx.signal, opts.watchRefreshMs);
        }
      } finally {
        stop();
      }
    },
  };
}

/**
 * For an abort with roll-back: which release each earlier counter of the rollout's release name
 * returns through. Each re-signed copy must be the earlier release unchanged but for a counter
 * above the rollout's (so agents accept it without weakening anti-rollback); an earlier release
 * signed with allowDowngrade serves as it is.
 */
async function returnTargets(ctx: ServiceContext, orgId: string, r: RolloutRow, reissued: adminv1.ReissuedRelease[]): Promise<Map<number, number>> {
  if (reissued.length > MAX_REISSUED) throw new ConnectError(`at most ${MAX_REISSUED} re-signed releases`, Code.InvalidArgument);
  const releases = await ctx.store.releases.listReleases(orgId, r.releaseName);
  const byCounter = new Map(releases.map((x) => [x.counter, x]));
  const returnTo = new Map<number, number>();
  for (const x of releases) {
    if (x.counter < r.releaseCounter && parseReleaseMeta(JSON.parse(x.meta)).allowDowngrade) returnTo.set(x.counter, x.counter);
  }
  for (const { previousCounter, counter } of reissued) {
    const before = byCounter.get(Number(previousCounter));
    const copy = byCounter.get(Number(counter));
    if (!before || !copy) throw new ConnectError(`no release ${r.releaseName} #${!before ? previousCounter : counter}`, Code.NotFound);
    if (copy.counter <= r.releaseCounter) {
      throw new ConnectError(`release ${r.releaseName} #${copy.counter} is not above the rollout's #${r.releaseCounter}: agents would refuse it`, Code.InvalidArgument);
    }
    if (!isReissueOf(content(copy), content(before))) throw new ConnectError(`release ${r.releaseName} #${copy.counter} is not a re-signed copy of #${before.counter}`, Code.InvalidArgument);
    returnTo.set(before.counter, copy.counter);
  }
  return returnTo;
}

const content = (r: ReleaseRow) => ({ sha256: r.sha256, length: r.length, meta: parseReleaseMeta(JSON.parse(r.meta)) });
