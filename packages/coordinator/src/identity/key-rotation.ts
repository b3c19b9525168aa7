/**
 * The coordinator's own key over time. `coordinator.key` is the current key; each rotation
 * appends to `key-endorsements.json` a link signed by the key it replaces, and Hello presents the
 * whole chain, so agents and admins that pinned any earlier key follow it and re-pin
 * (protocol/auth/rotation.ts). Retired keys are kept as `coordinator.retired-<ms>.key` (0600)
 * for the record; nothing uses them.
 */
import { copyFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  commonv1,
  endorseKey,
  fingerprint,
  generateIdentity,
  keyPin,
  loadIdentity,
  nodeId,
  parseNodeId,
  readJsonIfExists,
  saveIdentity,
  writeJsonAtomic,
  type Identity,
} from "@flotilla/protocol";
import { loadSharedCoordinatorIdentity, loadSharedOnlineIdentity } from "./shared-identity.ts";

interface StoredEndorsement {
  oldKey: string;
  newKey: string;
  timeMs: number;
  signature: string;
}

const KEY_FILE = "coordinator.key";
const NEXT_KEY_FILE = "coordinator.next.key";
const ENDORSEMENTS_FILE = "key-endorsements.json";

/** The endorsement chain of a data directory, as Hello carries it; empty before any rotation. */
export async function loadEndorsements(dataDir: string): Promise<commonv1.KeyEndorsement[]> {
  const stored = (await readJsonIfExists<StoredEndorsement[]>(join(dataDir, ENDORSEMENTS_FILE))) ?? [];
  return stored.map((e) =>
    create(commonv1.KeyEndorsementSchema, {
      oldKey: parseNodeId(e.oldKey),
      newKey: parseNodeId(e.newKey),
      time: timestampFromMs(e.timeMs),
      signature: Buffer.from(e.signature, "base64"),
    }),
  );
}

/**
 * The coordinator's online key (created on first use, `online.key`): it signs TUF snapshot and
 * timestamp metadata and seals secrets kept at rest (Nix signing keys). It is not the transport
 * identity, so rotating that (`rotate-key`) changes neither what agents' pinned TUF roots trust
 * nor what sealed secrets open with; the online key itself is rotated through a TUF root
 * rotation signed by the admins.
 */
export function loadOnlineIdentity(dataDir: string): Promise<Identity> {
  return loadSharedOnlineIdentity(dataDir);
}

/** The coordinator's current identity (created on first use). */
export function loadCoordinatorIdentity(dataDir: string): Promise<Identity> {
  return loadSharedCoordinatorIdentity(dataDir);
}

/**
 * Replaces the coordinator's key with a new one endorsed by the current one. Run it while the
 * coordinator is stopped; the next start serves the new key. Crash-safe and re-runnable: the
 * new key is written first under its own name, then the endorsement, then it takes over.
 */
export async function rotateCoordinatorKey(dataDir: string, now = Date.now()): Promise<{ from: Identity; to: Identity }> {
  const keyPath = join(dataDir, KEY_FILE);
  const nextPath = join(dataDir, NEXT_KEY_FILE);
  const current = await loadIdentity(keyPath).catch((err: NodeJS.ErrnoException) => {
    throw err.code === "ENOENT" ? new Error(`no coordinator key in ${dataDir}: is it a coordinator's data directory?`) : err;
  });
  let next: Identity;
  try {
    next = await loadIdentity(nextPath);
  } catch {
    next = generateIdentity();
    await saveIdentity(nextPath, next);
  }
  const path = join(dataDir, ENDORSEMENTS_FILE);
  const stored = (await readJsonIfExists<StoredEndorsement[]>(path)) ?? [];
  if (!stored.some((e) => e.oldKey === current.id && e.newKey === next.id)) {
    const link = endorseKey(current, next.publicKey, now);
    stored.push({ oldKey: current.id, newKey: nodeId(link.newKey), timeMs: link.timeMs, signature: Buffer.from(link.signature).toString("base64") });
    await writeJsonAtomic(path, stored);
  }
  await copyFile(keyPath, join(dataDir, `coordinator.retired-${now}.key`));
  await saveIdentity(keyPath, next);
  await rm(nextPath, { force: true });
  return { from: current, to: next };
}

/** A line for people: which key replaced which. */
export function describeRotation(r: { from: Identity; to: Identity }): string {
  return `coordinator key rotated: ${fingerprint(r.from.publicKey)} (pin ${keyPin(r.from.publicKey)}) -> ${fingerprint(r.to.publicKey)} (pin ${keyPin(r.to.publicKey)})`;
}
