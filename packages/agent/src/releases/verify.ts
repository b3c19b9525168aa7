import { machine } from "node:os";
import { basename } from "node:path";
import { parseReleaseMeta, releaseTargetPath, type ReleaseMeta } from "@flotilla/protocol/agent";
import type { InstalledRelease } from "../activation/activator.ts";
import { CoordinatorFetcher, metadataBaseUrl, pinRoot, RootRefused, TransientError, type CoordinatorHttp, type ExpectedRoot } from "./coordinator-http.ts";

/** A refusal of a release: it is not what the organization's admins signed, or may not be installed here. */
export class ReleaseRefused extends Error {
  override name = "ReleaseRefused";
}

export interface VerifiedRelease {
  path: string;
  meta: ReleaseMeta;
  sha256: string;
  length: number;
}

/** The names tuf-js gives to verification failures, as opposed to network trouble. */
function isTransient(err: unknown): boolean {
  if (err instanceof TransientError) return true;
  return err instanceof Error && /ECONNREFUSED|ECONNRESET|ETIMEDOUT|socket hang up/.test(err.message);
}

/**
 * Steps 1 to 4 of verification, before any byte of the artifact is fetched: a TUF update
 * (root chain from the pinned root, itself the one the join string named if it named one, timestamp, snapshot, targets: signatures, thresholds,
 * versions, expiry), the target must be in the signed targets with valid release metadata for
 * this name, its architectures must include this machine's, and its counter must not be below
 * the installed one unless the signed metadata allows a downgrade.
 */
export async function verifyRelease(opts: {
  http: CoordinatorHttp;
  metadataDir: string;
  /** The root the join string named, pinned as the first instead of trusting 1.root.json. */
  expectedRoot?: ExpectedRoot;
  name: string;
  targetPath: string;
  installed: InstalledRelease | undefined;
  arch?: string;
}): Promise<VerifiedRelease> {
  try {
    if (!(await pinRoot(opts.http, opts.metadataDir, opts.expectedRoot))) throw new ReleaseRefused("the organization has no signed root metadata yet");
    // Loaded at the first release, not at start: an idle agent does not hold tuf-js.
    const { Updater } = await import("tuf-js");
    const updater = new Updater({
      metadataDir: opts.metadataDir,
      metadataBaseUrl: metadataBaseUrl(opts.http),
      fetcher: new CoordinatorFetcher(opts.http),
    });
    await updater.refresh();
    const info = await updater.getTargetInfo(opts.targetPath);
    if (!info) throw new ReleaseRefused(`target ${opts.targetPath} is not in the signed targets metadata`);
    const meta = parseReleaseMeta((info.custom as { flotilla?: unknown }).flotilla);
    if (meta.name !== opts.name || releaseTargetPath(meta, basename(info.path)) !== info.path) {
      throw new ReleaseRefused(`target ${info.path} is not a release of ${opts.name}`);
    }
    const sha256 = info.hashes.sha256;
    if (!sha256 || !/^[0-9a-f]{64}$/.test(sha256)) throw new ReleaseRefused(`target ${info.path} has no sha256`);
    const arch = opts.arch ?? machine();
    if (meta.arch.length > 0 && !meta.arch.includes(arch)) {
      throw new ReleaseRefused(`release ${meta.name} ${meta.version} is for ${meta.arch.join(", ")}, not ${arch}`);
    }
    const cur = opts.installed;
    if (cur && meta.counter < cur.counter && !meta.allowDowngrade) {
      throw new ReleaseRefused(
        `refusing ${meta.name} ${meta.version} (#${meta.counter}): lower than the installed ${cur.version} (#${cur.counter}) and its signed metadata does not allow a downgrade`,
      );
    }
    return { path: info.path, meta, sha256, length: info.length };
  } catch (err) {
    if (err instanceof ReleaseRefused || isTransient(err)) throw err;
    if (err instanceof RootRefused) throw new ReleaseRefused(err.message);
    // tuf-js: unsigned, expired, rolled back, mixed metadata; zod: invalid release metadata.
    throw new ReleaseRefused(`signed metadata check failed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  }
}
