import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Targets } from "@tufjs/models";
import { adminv1, parseReleaseMeta, releaseTargetPath, RELEASE_NAME } from "@flotilla/protocol";
import type { ArtifactStore } from "../artifacts/artifact-store.ts";
import { SHA256_HEX } from "../artifacts/artifact-store.ts";
import { adminOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import { findAdminDevice } from "../devices/devices.ts";
import type { ControlAction, DeviceReleaseRow, ReleaseRow } from "../store/index.ts";
import type { GarbageCollector } from "../gc/garbage.ts";
import { MetadataError, type TufRepository } from "../tuf/repository.ts";

const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const MAX_STEPS = 1000;

/** The capability an agent declares for a release kind it can activate. */
export function kindCapability(kind: string): string {
  return `release:${kind}`;
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ConnectError(`${what} is not valid JSON`, Code.InvalidArgument);
  }
}

function fromMetadataError(err: unknown): never {
  if (err instanceof MetadataError) {
    const code = err.kind === "unsigned" ? Code.PermissionDenied : err.kind === "conflict" ? Code.FailedPrecondition : Code.InvalidArgument;
    throw new ConnectError(err.message, code);
  }
  throw err;
}

export function releaseView(r: ReleaseRow): adminv1.Release {
  return {
    $typeName: "flotilla.admin.v1.Release",
    name: r.name,
    version: r.version,
    counter: BigInt(r.counter),
    kind: r.kind,
    targetPath: r.targetPath,
    sha256: r.sha256,
    length: BigInt(r.length),
    metaJson: r.meta,
    createdAt: timestampFromMs(r.createdAt),
  };
}

/**
 * Checks the targets an admin signed before the coordinator accepts them: released targets are
 * immutable, new ones carry valid release metadata at their canonical path, counters grow per
 * name, and every new artifact has been uploaded completely by this organization itself (the
 * bytes are stored once for all; an organization that has not uploaded them may not name them).
 */
async function newReleases(orgId: string, next: Targets, previous: Targets, ctx: ServiceContext, artifacts: ArtifactStore): Promise<ReleaseRow[]> {
  const rows: ReleaseRow[] = [];
  const now = Date.now();
  for (const [path, t] of Object.entries(next.targets)) {
    const old = previous.targets[path];
    if (old) {
      if (!old.equals(t)) throw new ConnectError(`target ${path} was already released and may not change`, Code.InvalidArgument);
      continue;
    }
    let meta;
    try {
      meta = parseReleaseMeta((t.custom as { flotilla?: unknown }).flotilla);
    } catch (err) {
      throw new ConnectError(`target ${path}: ${(err as Error).message}`, Code.InvalidArgument);
    }
    const file = path.slice(path.lastIndexOf("/") + 1);
    if (!FILE_NAME.test(file) || path !== releaseTargetPath(meta, file)) {
      throw new ConnectError(`target ${path} must be named ${meta.name}/${meta.counter}/<file>`, Code.InvalidArgument);
    }
    const sha256 = t.hashes.sha256 ?? "";
    if (!SHA256_HEX.test(sha256)) throw new ConnectError(`target ${path} needs a sha256 hash`, Code.InvalidArgument);
    // Removed releases' counters count too: a counter, once signed, never names other bytes.
    const highest = Math.max(await ctx.store.releases.highestCounter(orgId, meta.name), ...rows.filter((r) => r.name === meta.name).map((r) => r.counter));
    if (meta.counter <= highest) {
      throw new ConnectError(`release ${meta.name} counter ${meta.counter} is not above the highest released (${highest})`, Code.InvalidArgument);
    }
    const owned = await ctx.store.releases.ownsArtifact(orgId, sha256, t.length);
    if (!owned || (await artifacts.size(sha256)) !== t.length) {
      // What this organization has uploaded, never whether another's upload is on disk.
      const have = await artifacts.uploaded(orgId, sha256, t.length);
      throw new ConnectError(
        `artifact ${sha256} of ${path} is not uploaded completely (${have} of ${t.length} bytes): upload it first`,
        Code.FailedPrecondition,
      );
    }
    rows.push({ orgId, name: meta.name, counter: meta.counter, version: meta.version, kind: meta.kind, targetPath: path, sha256, length: t.length, meta: JSON.stringify(meta), createdAt: now });
  }
  return rows;
}

/** Target paths in `previous` that `next` no longer lists. */
function removedTargets(next: Targets, previous: Targets): string[] {
  return Object.keys(previous.targets).filter((p) => !(p in next.targets));
}

/** One line naming who needs a release, for a refusal. */
function usersText(running: string[], told: string[]): string {
  const parts = [];
  if (running.length > 0) parts.push(`devices running it: ${running.join(", ")}`);
  if (told.length > 0) parts.push(`devices told to run it: ${told.join(", ")}`);
  return parts.join("; ");
}

export function releaseService(ctx: ServiceContext, tuf: TufRepository, artifacts: ArtifactStore, gc?: GarbageCollector): ServiceImpl<typeof adminv1.ReleaseService> {
  const { store } = ctx;

  const findDevice = (hctx: HandlerContext, ref: string) => findAdminDevice(store, hctx, ref);

  return {
    async getRepository(_req, hctx) {
      const { orgId } = adminOf(hctx);
      const root = await tuf.root(orgId);
      const targets = await tuf.targets(orgId);
      return {
        rootJson: root ? JSON.stringify(root.toJSON()) : "",
        targetsJson: targets ? JSON.stringify(targets.toJSON()) : "",
        onlineKey: tuf.onlineKeyHex,
      };
    },

    async updateRoot(req, hctx) {
      const { orgId } = adminOf(hctx);
      const root = parseJson(req.rootJson, "root_json");
      const targets = req.targetsJson ? parseJson(req.targetsJson, "targets_json") : undefined;
      const version = await tuf.updateRoot(orgId, root, targets).catch(fromMetadataError);
      ctx.log.info("TUF root updated", { org: orgId, version });
      return { version: BigInt(version) };
    },

    async publishTargets(req, hctx) {
      const { orgId } = adminOf(hctx);
      const json = parseJson(req.targetsJson, "targets_json");
      let added: ReleaseRow[] = [];
      const version = await tuf
        .publishTargets(orgId, json, async (next, previous) => {
          const removed = removedTargets(next, previous);
          if (removed.length > 0) {
            throw new ConnectError(`targets ${removed.join(", ")} are missing: a release is removed with \`flotilla release rm\`, which checks that no device needs it`, Code.InvalidArgument);
          }
          added = await newReleases(orgId, next, previous, ctx, artifacts);
          // Recorded before the metadata is written: a release row without metadata is harmless
          // (agents verify against metadata), metadata without its row would be undeployable.
          await store.releases.addReleases(added);
        })
        .catch(fromMetadataError);
      ctx.log.info("TUF targets published", { org: orgId, version, added: added.map((r) => r.targetPath).join(",") });
      return { version: BigInt(version), added: added.map(releaseView) };
    },

    async listReleases(req, hctx) {
      const { orgId } = adminOf(hctx);
      if (req.name && !RELEASE_NAME.test(req.name)) throw new ConnectError("invalid release name", Code.InvalidArgument);
      return {
        releases: (await store.releases.listReleases(orgId, req.name || undefined)).map(releaseView),
        removed: (await store.releases.listRemovedReleases(orgId, req.name || undefined)).map(releaseView),
      };
    },

    async deployRelease(req, hctx) {
      const { orgId } = adminOf(hctx);
      if (!RELEASE_NAME.test(req.name)) throw new ConnectError("invalid release name", Code.InvalidArgument);
      if (!req.version || req.version.length > 128) throw new ConnectError("a release version is required", Code.InvalidArgument);
      const device = await findDevice(hctx, req.device);
      if (device.lifecycle !== "approved") throw new ConnectError(`device ${device.name} is ${device.lifecycle}`, Code.FailedPrecondition);
      const byCounter = /^#(\d{1,15})$/.exec(req.version);
      const release = byCounter
        ? await store.releases.getRelease(orgId, req.name, Number(byCounter[1]))
        : await store.releases.findRelease(orgId, req.name, req.version);
      if (!release) throw new ConnectError(`no release ${req.name}@${req.version}`, Code.NotFound);
      if (!device.capabilities.includes(kindCapability(release.kind))) {
        throw new ConnectError(
          `device ${device.name} cannot activate ${release.kind} releases (it declares: ${device.capabilities.join(", ") || "nothing"})`,
          Code.FailedPrecondition,
        );
      }
      if (!(await store.releases.setDesiredRelease(orgId, device.id, release, Date.now()))) {
        throw new ConnectError(`no device ${JSON.stringify(req.device)}`, Code.NotFound);
      }
      return { release: releaseView(release), deviceId: device.id };
    },

    async removeRelease(req, hctx) {
      const { orgId } = adminOf(hctx);
      if (!RELEASE_NAME.test(req.name)) throw new ConnectError("invalid release name", Code.InvalidArgument);
      if (!req.version || req.version.length > 128) throw new ConnectError("a release version is required", Code.InvalidArgument);
      const byCounter = /^#(\d{1,15})$/.exec(req.version);
      const find = () => (byCounter ? store.releases.getRelease(orgId, req.name, Number(byCounter[1])) : store.releases.findRelease(orgId, req.name, req.version));
      const release = await find();
      if (!release) throw new ConnectError(`no release ${req.name}@${req.version}`, Code.NotFound);
      const check = async () => {
        const users = await store.releases.releaseUsers(orgId, release.name, release.counter);
        if (users.rollouts.length > 0) {
          throw new ConnectError(
            `release ${release.name}@${release.version} (#${release.counter}) is taken by rollouts ${users.rollouts.join(", ")}: abort them first (--force does not override this)`,
            Code.FailedPrecondition,
          );
        }
        if (!req.force && users.running.length + users.told.length > 0) {
          throw new ConnectError(`release ${release.name}@${release.version} (#${release.counter}) is in use (${usersText(users.running, users.told)}); --force removes it anyway`, Code.FailedPrecondition);
        }
        return users;
      };
      let users = await check();
      let version = 0;
      if (req.targetsJson) {
        const json = parseJson(req.targetsJson, "targets_json");
        version = await tuf
          .publishTargets(orgId, json, async (next, previous) => {
            const removed = removedTargets(next, previous);
            if (removed.length !== 1 || removed[0] !== release.targetPath || Object.keys(next.targets).length !== Object.keys(previous.targets).length - 1) {
              throw new ConnectError(`the new targets must list every current target but ${release.targetPath}, and nothing else`, Code.InvalidArgument);
            }
            for (const [path, t] of Object.entries(next.targets)) {
              if (!previous.targets[path]?.equals(t)) throw new ConnectError(`target ${path} may not change`, Code.InvalidArgument);
            }
            // Checked again under the repository's lock; the rows go before the metadata is written.
            users = await check();
            const told = await store.releases.removeRelease(orgId, release.name, release.counter, Date.now());
            if (told === false) throw new ConnectError(`no release ${req.name}@${req.version}`, Code.NotFound);
            users = { ...users, told };
          })
          .catch(fromMetadataError);
        ctx.log.info("release removed", { org: orgId, release: release.targetPath, version, running: users.running.join(","), told: users.told.join(",") });
      }
      return { release: releaseView(release), running: users.running, told: users.told, targetsVersion: BigInt(version) };
    },

    async collectGarbage(req, hctx) {
      const { orgId } = adminOf(hctx);
      if (!gc) throw new ConnectError("garbage collection is not available on this coordinator", Code.Unimplemented);
      const r = await gc.collect({ orgIds: [orgId], dryRun: req.dryRun });
      const o = r.orgs[0];
      return {
        organization: { artifacts: BigInt(o?.artifacts ?? 0), nars: BigInt(o?.nars ?? 0), storePaths: BigInt(o?.storePaths ?? 0), bytes: BigInt(o?.bytes ?? 0) },
        filesDeleted: BigInt(r.filesDeleted),
        bytesDeleted: BigInt(r.bytesDeleted),
        dryRun: r.dryRun,
      };
    },

    async getDeviceReleases(req, hctx) {
      const { orgId } = adminOf(hctx);
      const device = await findDevice(hctx, req.device);
      const limit = Math.min(req.limit || 200, MAX_STEPS);
      const rows = await store.releases.listDeviceReleases(orgId, device.id);
      // One more than asked: whether older steps exist, so no client cuts the history silently.
      const fetched = await store.releases.listReleaseSteps(orgId, device.id, limit + 1);
      const steps = fetched.slice(-limit);
      return {
        deviceId: device.id,
        moreSteps: fetched.length > limit,
        releases: rows.map(deviceReleaseView),
        steps: steps.map((s) => ({
          time: timestampFromMs(s.time),
          name: s.name,
          targetPath: s.targetPath,
          step: s.step,
          bytesDone: BigInt(s.bytesDone),
          bytesTotal: BigInt(s.bytesTotal),
          error: s.error,
        })),
      };
    },

    async controlRelease(req, hctx) {
      const { orgId, actor } = adminOf(hctx);
      if (!RELEASE_NAME.test(req.name)) throw new ConnectError("invalid release name", Code.InvalidArgument);
      if (!CONTROL_ACTIONS.has(req.action)) throw new ConnectError("action must be restart, stop, start or undeploy", Code.InvalidArgument);
      if (req.purgeData && req.action !== "undeploy") throw new ConnectError("purge_data goes only with undeploy", Code.InvalidArgument);
      const device = await findDevice(hctx, req.device);
      if (req.action === "undeploy") {
        const row = (await store.releases.listDeviceReleases(orgId, device.id)).find((x) => x.name === req.name);
        if (row?.desiredKind === "nixos") throw new ConnectError(`${req.name} is a NixOS system, which cannot be undeployed: deploy another system instead`, Code.FailedPrecondition);
      }
      const r = await store.releases.controlRelease({
        orgId,
        deviceId: device.id,
        name: req.name,
        action: req.action as ControlAction,
        purgeData: req.purgeData,
        by: actor,
        now: Date.now(),
      });
      if (r === "not-approved") throw new ConnectError(`device ${device.name} is ${device.lifecycle}`, Code.FailedPrecondition);
      if (r === "missing") throw new ConnectError(`device ${device.name} runs no release ${req.name}`, Code.NotFound);
      const row = (await store.releases.listDeviceReleases(orgId, device.id)).find((x) => x.name === req.name);
      return { deviceId: device.id, release: row && deviceReleaseView(row) };
    },
  };
}

const CONTROL_ACTIONS = new Set(["restart", "stop", "start", "undeploy"]);

function deviceReleaseView(r: DeviceReleaseRow) {
  return {
    name: r.name,
    currentVersion: r.currentVersion,
    currentCounter: BigInt(r.currentCounter),
    desiredVersion: r.desiredVersion,
    desiredCounter: BigInt(r.desiredCounter),
    desiredTarget: r.desiredTarget,
    desiredAt: timestampFromMs(r.desiredAt),
    runState: r.runState,
    restartGeneration: BigInt(r.restartGen),
    controlAction: r.controlAction,
    controlBy: r.controlBy,
    controlAt: r.controlAt ? timestampFromMs(r.controlAt) : undefined,
    reportedState: r.reportedState,
    reportedAt: r.reportedAt ? timestampFromMs(r.reportedAt) : undefined,
    reportedError: r.reportedError,
    purgeData: r.purgeData,
  };
}
