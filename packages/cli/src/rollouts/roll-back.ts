/** `rollout abort --roll-back`: returning devices to the releases they ran before. */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { adminv1, isReissueOf } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";
import { ExitError } from "../errors.ts";
import { rolloutWithDevices } from "./pages.ts";
import { parseDuration } from "../output.ts";
import { reissuedTarget, SignedTargets, type ReleaseTarget } from "../signing/signed-targets.ts";
import { DEFAULT_TARGETS_EXPIRY, type SigningOpts } from "../signing/signing-options.ts";

/**
 * Aborts a rollout with roll-back. Agents refuse a release counter below the one they run
 * (anti-rollback), so every earlier release that devices return to is first signed again here,
 * unchanged but for a counter above the rollout's, unless it allows downgrades or such a copy
 * exists already. A device notified meanwhile may add an earlier release: then once more.
 */
export async function abortRollingBack(target: AdminTarget, c: Client<typeof adminv1.RolloutService>, id: string, o: SigningOpts): Promise<adminv1.Rollout> {
  const releases = await serviceClient(target, adminv1.ReleaseService);
  for (let attempt = 1; ; attempt++) {
    // Every device, page by page: any of them may have run an earlier release.
    const { rollout: r, devices } = await rolloutWithDevices(c, id);
    const reissued = r.status === "running" || r.status === "paused" ? await returnReleases(target, releases, r, devices, o) : [];
    try {
      const res = await c.abortRollout({ id, rollBack: true, reissued });
      if (!res.rollout) throw new Error("the coordinator sent no rollout");
      return res.rollout;
    } catch (err) {
      if (attempt >= 3 || !(err instanceof ConnectError) || err.code !== Code.FailedPrecondition || (r.status !== "running" && r.status !== "paused")) throw err;
    }
  }
}

/** The re-signed copies of the releases the rollout's notified devices ran before, signing those that do not exist yet. */
async function returnReleases(
  target: AdminTarget,
  client: Client<typeof adminv1.ReleaseService>,
  r: adminv1.Rollout,
  devices: adminv1.RolloutDevice[],
  o: SigningOpts,
): Promise<adminv1.ReissuedRelease[]> {
  const name = r.spec?.releaseName ?? "";
  const above = Number(r.releaseCounter);
  const previous = new Set(devices.filter((d) => d.state !== "pending" && d.previousCounter > 0n && Number(d.previousCounter) < above).map((d) => Number(d.previousCounter)));
  if (previous.size === 0) return [];
  const current = await SignedTargets.load(client, target);
  const signed = current.releases(name);
  let next = await current.nextCounter(client, name);
  const pairs: { previousCounter: number; counter: number }[] = [];
  const toSign: ReleaseTarget[] = [];
  for (const p of [...previous].sort((a, b) => a - b)) {
    const original = signed.find((x) => x.meta.counter === p);
    if (!original) throw new ExitError(`release ${name} #${p}, which devices ran before, is not in the organization's signed targets`, 1);
    if (original.meta.allowDowngrade) continue;
    const copy = signed.find((x) => x.meta.counter > above && isReissueOf(x, original)) ?? reissuedTarget(original, next++);
    if (!signed.includes(copy)) toSign.push(copy);
    pairs.push({ previousCounter: p, counter: copy.meta.counter });
  }
  if (toSign.length > 0) {
    await current.publish(client, target, toSign, o, parseDuration(DEFAULT_TARGETS_EXPIRY));
    for (const t of toSign) process.stderr.write(`re-signed ${name} ${t.meta.version} as #${t.meta.counter}, so devices may return to it\n`);
  }
  return pairs.map((x) => create(adminv1.ReissuedReleaseSchema, { previousCounter: BigInt(x.previousCounter), counter: BigInt(x.counter) }));
}
