/**
 * Signing new targets metadata on the admin's machine: one way to add releases to the
 * organization's targets, shared by `release create`, `release reissue` and
 * `rollout abort --roll-back`, and to drop one (`release rm`).
 */
import type { Client } from "@connectrpc/connect";
import { Metadata, MetadataKind, type Root, type Targets } from "@tufjs/models";
import { adminv1, parseReleaseMeta, releaseTargetPath, type ReleaseContent, type ReleaseMeta } from "@flotilla/protocol";
import type { AdminTarget } from "../admin/client.ts";
import { UsageError } from "../errors.ts";
import { signMetadata, tufDate } from "./metadata.ts";
import { signersFor, type SigningOpts } from "./signing-options.ts";
import { verifiedRepository } from "./trusted-root.ts";

/** One target file of a release, as it appears in targets metadata. */
export interface ReleaseTarget extends ReleaseContent {
  path: string;
}

/** The organization's current targets, as its admins signed them. */
export class SignedTargets {
  private constructor(
    readonly metadata: Metadata<Targets>,
    /** The current root, verified: whose targets keys must sign the next version. */
    readonly root: Metadata<Root>,
  ) {}

  /** The current targets, after checking them against the roots this admin trusts (signing/trusted-root.ts). */
  static async load(client: Client<typeof adminv1.ReleaseService>, target: AdminTarget): Promise<SignedTargets> {
    const repo = await verifiedRepository(target, client);
    if (!repo.targets || !repo.root) throw new UsageError("this organization has no signing keys yet: run `flotilla signing-key add`");
    return new SignedTargets(repo.targets, repo.root);
  }

  /** Every release target of `name` (targets that do not carry valid release metadata are left out). */
  releases(name: string): ReleaseTarget[] {
    const out: ReleaseTarget[] = [];
    for (const [path, t] of Object.entries(this.metadata.signed.targets)) {
      let meta: ReleaseMeta;
      try {
        meta = parseReleaseMeta((t.custom as { flotilla?: unknown }).flotilla);
      } catch {
        continue;
      }
      const sha256 = t.hashes.sha256;
      if (meta.name === name && sha256) out.push({ path, length: t.length, sha256, meta });
    }
    return out.sort((a, b) => a.meta.counter - b.meta.counter);
  }

  /** The counter a new release of `name` gets: above every signed one and every one the coordinator lists, removed ones included. */
  async nextCounter(client: Client<typeof adminv1.ReleaseService>, name: string): Promise<number> {
    const res = await client.listReleases({ name });
    // Removed releases' counters are never given again.
    const listed = [...res.releases, ...res.removed].map((r) => Number(r.counter));
    return Math.max(0, ...listed, ...this.releases(name).map((r) => r.meta.counter)) + 1;
  }

  /** The keys that will sign the next targets version (signing-options.ts signersFor); close them after use. */
  signers(target: AdminTarget, o: SigningOpts): ReturnType<typeof signersFor> {
    const role = this.root.signed.roles.targets;
    return signersFor(target, o, { keyIds: role?.keyIDs ?? [], threshold: role?.threshold ?? 1 });
  }

  /**
   * Signs the next targets version, with `added` on top of every current target, and has the
   * coordinator publish it (it checks thresholds, counters and uploads again). Returns the version.
   */
  async publish(client: Client<typeof adminv1.ReleaseService>, target: AdminTarget, added: ReleaseTarget[], o: SigningOpts, expiresMs: number): Promise<bigint> {
    const targetsJson = await this.signNext(target, added, [], o, expiresMs);
    return (await client.publishTargets({ targetsJson })).version;
  }

  /** The next targets version, signed: every current target but `removed`, and `added`; as JSON. */
  async signNext(target: AdminTarget, added: ReleaseTarget[], removed: string[], o: SigningOpts, expiresMs: number): Promise<string> {
    const json0 = this.metadata.signed.toJSON();
    const entries = Object.fromEntries(added.map((r) => [r.path, { length: r.length, hashes: { sha256: r.sha256 }, custom: { flotilla: r.meta } }]));
    const kept = Object.fromEntries(Object.entries(json0.targets as Record<string, unknown>).filter(([path]) => !removed.includes(path)));
    const next = Metadata.fromJSON(MetadataKind.Targets, {
      signatures: [],
      signed: { ...json0, version: this.metadata.signed.version + 1, expires: tufDate(Date.now() + expiresMs), targets: { ...kept, ...entries } },
    } as never);
    const s = await this.signers(target, o);
    try {
      await signMetadata(next, s.signers);
    } finally {
      s.close();
    }
    return JSON.stringify(next.toJSON());
  }
}

/** A release signed again, unchanged but for its counter. */
export function reissuedTarget(original: ReleaseTarget, counter: number): ReleaseTarget {
  const meta = { ...original.meta, counter };
  const file = original.path.slice(original.path.lastIndexOf("/") + 1);
  return { path: releaseTargetPath(meta, file), length: original.length, sha256: original.sha256, meta };
}
