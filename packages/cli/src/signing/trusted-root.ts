/**
 * The admin's own trust in an organization's TUF root, so that a compromised coordinator cannot
 * have admins sign what it slipped in (docs/architecture.md, decision 3). Signing new targets re-signs every
 * target already there; before it does, the CLI checks that the root the coordinator presents
 * descends, each version signed by the one before, from the root this admin pinned when it first
 * saw (or made) it, and that the current targets carry the threshold of signatures of the current
 * root (not of an older one: a key removed from the root no longer counts).
 * The pinned chain lives in `$FLOTILLA_HOME/tuf-roots/`, one file per coordinator and organization.
 */
import { Metadata, MetadataKind, type Root, type Targets } from "@tufjs/models";
import { adminv1, encodeJoinString, parseJoinString, pinnedRequest, readBody, readJsonIfExists, tufRootDigest, TUF_METADATA_PATH, writeJsonAtomic } from "@flotilla/protocol";
import type { Client } from "@connectrpc/connect";
import { adminBearer, type AdminTarget } from "../admin/client.ts";
import { pinPath } from "../admin/pins.ts";
import { parseMetadata } from "./metadata.ts";

/** At most this many root versions are fetched to catch up with the coordinator's. */
const MAX_ROOT_STEPS = 1024;

interface PinnedRoots {
  coordinator: string;
  organization: string;
  /** Every root version this admin has verified, oldest first, as JSON. */
  roots: unknown[];
}

/** What the coordinator holds for the organization, after the checks above. */
export interface VerifiedRepository {
  /** The current root, verified; undefined while the organization has no signing keys. */
  root: Metadata<Root> | undefined;
  /** The current targets, signed by the threshold of the current root; undefined with no root. */
  targets: Metadata<Targets> | undefined;
  onlineKey: string;
}

/** A refusal to trust what the coordinator presents. */
export class UntrustedMetadataError extends Error {
  override name = "UntrustedMetadataError";
}

const pinFile = (target: AdminTarget) => pinPath(target, "tuf-roots");

const rootOf = (json: unknown) => Metadata.fromJSON(MetadataKind.Root, json as never) as Metadata<Root>;
const same = (a: Metadata<Root>, b: Metadata<Root>) => JSON.stringify(a.toJSON()) === JSON.stringify(b.toJSON());

/** Root version `n` as the coordinator serves it to its organization's devices and readers. */
async function fetchRoot(target: AdminTarget, n: number): Promise<Metadata<Root>> {
  const auth = await adminBearer(target);
  const res = await pinnedRequest({ method: "GET", url: `${auth.url}${TUF_METADATA_PATH}${n}.root.json`, pin: auth.pin, headers: { authorization: `Bearer ${auth.token}` }, timeoutMs: 30_000 });
  const body = await readBody(res);
  if (res.statusCode !== 200) throw new UntrustedMetadataError(`the coordinator does not serve root version ${n} (HTTP ${res.statusCode})`);
  return parseMetadata<Root>(MetadataKind.Root, body);
}

/** `next` is root version `version`, signed by the threshold of `trusted` and of itself. */
function checkStep(trusted: Metadata<Root>, next: Metadata<Root>, version: number): void {
  if (next.signed.version !== version) throw new UntrustedMetadataError(`root version ${version} from the coordinator says it is version ${next.signed.version}`);
  try {
    trusted.verifyDelegate("root", next);
    next.verifyDelegate("root", next);
  } catch (err) {
    throw new UntrustedMetadataError(`root version ${version} from the coordinator is not signed by the threshold of root version ${version - 1}: ${(err as Error).message}`);
  }
}

/**
 * The organization's repository as the coordinator presents it, checked against the roots this
 * admin pinned; the first time, the chain from root version 1 is verified and pinned (trust on
 * first use, as with the coordinator's key). Throws UntrustedMetadataError, pinning nothing, on
 * a root that does not descend from the pinned one, an older root, or targets not signed by the
 * threshold of the current root.
 */
export async function verifiedRepository(target: AdminTarget, client: Client<typeof adminv1.ReleaseService>): Promise<VerifiedRepository> {
  const repo = await client.getRepository({});
  const pin = await pinFile(target);
  const pinned = await readJsonIfExists<PinnedRoots>(pin.path);
  const known = (pinned?.roots ?? []).map(rootOf);
  const last = known.at(-1);
  if (!repo.rootJson) {
    if (last) throw new UntrustedMetadataError(`the coordinator presents no signing root for this organization, whose root this admin verified at version ${last.signed.version}`);
    return { root: undefined, targets: undefined, onlineKey: repo.onlineKey };
  }
  const current = parseMetadata<Root>(MetadataKind.Root, repo.rootJson);
  const have = last?.signed.version ?? 0;
  const want = current.signed.version;
  if (want < have) throw new UntrustedMetadataError(`the coordinator presents root version ${want}, older than version ${have} this admin verified`);
  if (want - have > MAX_ROOT_STEPS) throw new UntrustedMetadataError(`root version ${want} is more than ${MAX_ROOT_STEPS} versions past ${have}`);
  const chain = [...known];
  if (want === have) {
    if (!same(current, last!)) throw new UntrustedMetadataError(`the coordinator's root version ${want} differs from the one this admin verified`);
  } else {
    let trusted = last;
    for (let v = have + 1; v <= want; v++) {
      const next = v === want ? current : await fetchRoot(target, v);
      if (trusted) checkStep(trusted, next, v);
      else {
        // First use: root version 1 is taken on trust, and must at least sign itself.
        checkStep(next, next, v);
      }
      if (v === want && !same(next, current)) throw new UntrustedMetadataError(`root version ${v} differs between the coordinator's API and its metadata files`);
      chain.push(next);
      trusted = next;
    }
  }
  const targets = repo.targetsJson ? parseMetadata<Targets>(MetadataKind.Targets, repo.targetsJson) : undefined;
  if (targets && !signedBy(current, targets)) {
    throw new UntrustedMetadataError(
      `the organization's targets metadata (version ${targets.signed.version}) is not signed by the threshold of the current root (version ${want}) this admin verified: refusing to sign on top of it`,
    );
  }
  if (chain.length > known.length) await pinRoots(target, chain);
  return { root: current, targets, onlineKey: repo.onlineKey };
}

/**
 * Targets count only under the current root: a key rotated out (perhaps because it leaked) signs
 * nothing that admins build on. Every root change re-signs the current targets under the new
 * root (`signing-key add`), so the admins' own targets always pass.
 */
function signedBy(root: Metadata<Root>, targets: Metadata<Targets>): boolean {
  try {
    root.verifyDelegate("targets", targets);
    return true;
  } catch {
    return false;
  }
}

/**
 * A join string from the coordinator, naming `root` (the organization's current root as this
 * admin verified it): the agent then trusts that root and no other as the start of its chain.
 */
export function joinStringNamingRoot(joinString: string, root: Metadata<Root> | undefined): string {
  return root ? encodeJoinString({ ...parseJoinString(joinString), root: tufRootDigest(root.toJSON()) }) : joinString;
}

/** Records verified roots (or one this admin has just signed), oldest first. */
export async function pinRoots(target: AdminTarget, roots: Metadata<Root>[]): Promise<void> {
  const pin = await pinFile(target);
  const file: PinnedRoots = { coordinator: pin.coordinator, organization: pin.organization, roots: roots.map((r) => r.toJSON()) };
  await writeJsonAtomic(pin.path, file);
}

/** The roots this admin has verified for the target's organization, oldest first. */
export async function pinnedRoots(target: AdminTarget): Promise<Metadata<Root>[]> {
  const pinned = await readJsonIfExists<PinnedRoots>((await pinFile(target)).path);
  return (pinned?.roots ?? []).map(rootOf);
}
