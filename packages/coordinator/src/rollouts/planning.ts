/** Validates a rollout request and computes its plan from the store's current view of the fleet. */
import { setImmediate as nextTurn } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { adminv1, flattenFacts, parseSelector, RELEASE_NAME, SelectorError } from "@flotilla/protocol";
import { kindCapability } from "../releases/release-service.ts";
import { factsFromJson, isOnline } from "../devices/convert.ts";
import type { ReleaseRow, RolloutSpecRow, Store } from "../store/index.ts";
import { planRollout, type PlanDevice, type RolloutPlan } from "./plan.ts";
import { MAX_WAVES, parseThreshold, parseWaves, WaveSpecError } from "./waves.ts";

const DAY = 86_400_000;
/** Limits on what a request may ask for: it comes from the network. */
const LIMITS = { maxParallel: 100_000, soakMs: 30 * DAY, deadlineMs: 366 * DAY };

export interface PlannedRollout {
  spec: RolloutSpecRow;
  release: ReleaseRow;
  plan: RolloutPlan;
}

const invalid = (msg: string) => new ConnectError(msg, Code.InvalidArgument);

/** Checks every field of a spec; throws InvalidArgument naming the first bad one. */
export function validateSpec(s: adminv1.RolloutSpec | undefined): RolloutSpecRow {
  if (!s) throw invalid("a rollout spec is required");
  if (!RELEASE_NAME.test(s.releaseName)) throw invalid(`invalid release name ${JSON.stringify(s.releaseName.slice(0, 80))}`);
  if (!s.releaseVersion || s.releaseVersion.length > 128) throw invalid("a release version is required (name@version)");
  if (s.selector.length > 4096) throw invalid("selector too long");
  if (s.waves.length > MAX_WAVES || s.waves.some((w) => w.length > 16)) throw invalid(`at most ${MAX_WAVES} waves of at most 16 characters each`);
  if (s.failureThreshold.length > 16) throw invalid("failure threshold too long");
  try {
    parseSelector(s.selector);
    parseWaves(s.waves);
    parseThreshold(s.failureThreshold);
  } catch (err) {
    if (err instanceof SelectorError || err instanceof WaveSpecError) throw invalid(err.message.split("\n")[0]!);
    throw err;
  }
  if (s.maxParallel > LIMITS.maxParallel) throw invalid(`max parallel must be at most ${LIMITS.maxParallel}`);
  if (s.soakMs > BigInt(LIMITS.soakMs)) throw invalid("soak time must be at most 30 days");
  if (s.deadlineMs > BigInt(LIMITS.deadlineMs)) throw invalid("deadline must be at most 366 days");
  return {
    releaseName: s.releaseName,
    releaseVersion: s.releaseVersion,
    selector: s.selector,
    waves: s.waves.map((w) => w.trim()),
    maxParallel: s.maxParallel,
    failureThreshold: s.failureThreshold.trim(),
    soakMs: Number(s.soakMs),
    approveEachWave: s.approveEachWave,
    deadlineMs: Number(s.deadlineMs),
  };
}

function releaseArch(r: ReleaseRow): string[] {
  try {
    const meta = JSON.parse(r.meta) as { arch?: unknown };
    return Array.isArray(meta.arch) ? meta.arch.filter((a): a is string => typeof a === "string") : [];
  } catch {
    return [];
  }
}

/**
 * The plan for a spec, as `plan` shows and `start` records it. Errors: InvalidArgument for a bad
 * field, NotFound for an unknown release, FailedPrecondition for a selection with no device able
 * to take the release.
 */
export async function planFor(store: Store, orgId: string, req: adminv1.RolloutSpec | undefined, now: number, offlineAfterMs: number): Promise<PlannedRollout> {
  const spec = validateSpec(req);
  const release = await store.releases.findRelease(orgId, spec.releaseName, spec.releaseVersion);
  if (!release) throw new ConnectError(`no release ${spec.releaseName}@${spec.releaseVersion}`, Code.NotFound);
  const unhealthy = await store.rollouts.unhealthyDevices(orgId);
  const rows = await store.devices.listDevices(orgId);
  const devices: PlanDevice[] = [];
  for (const row of rows) {
    const facts = flattenFacts(factsFromJson(row.facts));
    devices.push({
      id: row.id,
      name: row.name,
      lifecycle: row.lifecycle,
      fields: { ...facts, ...row.labels },
      arch: facts.arch ?? "",
      capabilities: row.capabilities,
      online: isOnline(row, now, offlineAfterMs),
      healthy: !unhealthy.has(row.id),
    });
    // Reading every device's facts takes a while in a large fleet: a turn of the event loop
    // every 1,000 lets other calls and HTTP/2 pings through.
    if (devices.length % 1000 === 0) await nextTurn();
  }
  const plan = planRollout(devices, parseSelector(spec.selector), { capability: kindCapability(release.kind), arch: releaseArch(release) }, parseWaves(spec.waves));
  if (plan.total === 0) {
    const why = plan.ineligible.length > 0 ? `: ${plan.ineligible.length} matched but cannot take it (e.g. ${plan.ineligible[0]!.device.name}: ${plan.ineligible[0]!.reason})` : "";
    throw new ConnectError(`selector ${JSON.stringify(spec.selector)} selects no device that can take ${release.name}@${release.version}${why}`, Code.FailedPrecondition);
  }
  return { spec, release, plan };
}
