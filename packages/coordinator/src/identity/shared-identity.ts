/**
 * One coordinator identity for every replica sharing a database. The keys stay files in the data
 * directory, which replicas share anyway (artifacts and TUF metadata are files there too): the
 * transport key `coordinator.key`, its endorsement chain `key-endorsements.json` and the online
 * key `online.key`. They are never copied into the database, so a leaked database dump or
 * backup holds no private key; the cost is that the shared folder (its 0600 key files) must be
 * protected as the keys themselves, on every host that mounts it.
 *
 * Two things make sharing safe: replicas starting at once on an empty folder agree on one key
 * (each new key is linked into place, never renamed over another replica's), and the database
 * records the key its replicas serve, so a replica started on another folder refuses to start
 * instead of answering with a key that admins' and agents' pins do not accept.
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, unlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { endorsedByPin, fingerprint, generateIdentity, keyPin, loadIdentity, parseNodeId, type commonv1, type Identity } from "@flotilla/protocol";
import type { ReplicaStore } from "../store/index.ts";

/**
 * Loads the key at `path`, creating it when absent such that of several processes creating it
 * at once, all end up with the same key: the first link() wins and the others load its key.
 */
export async function loadOrCreateSharedIdentity(path: string): Promise<Identity> {
  try {
    return await loadIdentity(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, generateIdentity().privateKey.export({ format: "pem", type: "pkcs8" }).toString(), { mode: 0o600 });
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
  return loadIdentity(path);
}

/** The coordinator's transport key in `dataDir`, created race-free on first use. */
export function loadSharedCoordinatorIdentity(dataDir: string): Promise<Identity> {
  return loadOrCreateSharedIdentity(join(dataDir, "coordinator.key"));
}

/** The online key in `dataDir` (TUF snapshot/timestamp, sealed secrets), created race-free on first use. */
export function loadSharedOnlineIdentity(dataDir: string): Promise<Identity> {
  return loadOrCreateSharedIdentity(join(dataDir, "online.key"));
}

/**
 * Checks that `identity` is the key the database's replicas serve, recording it when the
 * database has none yet, and following a rotation (a chain of endorsements from the recorded key
 * to this one). Throws one line for a replica started with another key.
 */
export async function checkSharedIdentity(replicas: ReplicaStore, identity: Identity, endorsements: readonly commonv1.KeyEndorsement[], now = Date.now()): Promise<void> {
  const chain = endorsements.map((e) => ({ oldKey: e.oldKey, newKey: e.newKey, timeMs: e.time ? timestampMs(e.time) : 0, signature: e.signature }));
  for (let attempt = 0; attempt < 3; attempt++) {
    const recorded = await replicas.recordIdentity(identity.id, now);
    if (recorded === identity.id) return;
    let recordedKey: Uint8Array;
    try {
      recordedKey = parseNodeId(recorded);
    } catch {
      throw new Error(`the database records a malformed coordinator key ${JSON.stringify(recorded)}`);
    }
    if (!endorsedByPin(keyPin(recordedKey), identity.publicKey, chain)) {
      throw new Error(
        `this coordinator's key ${fingerprint(identity.publicKey)} is not the key ${fingerprint(recordedKey)} the database's replicas serve: ` +
          "replicas sharing a database must share the data directory (coordinator.key, online.key, key-endorsements.json)",
      );
    }
    // Rotated: the recorded key endorsed ours. Another replica may record it first; read again.
    if (await replicas.replaceIdentity(recorded, identity.id, now)) return;
  }
  throw new Error("the database's recorded coordinator key keeps changing: are replicas rotating keys at once?");
}
