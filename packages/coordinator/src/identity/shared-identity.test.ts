import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { tempDir } from "@flotilla/protocol/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Store } from "../store/index.ts";
import { storeBackends } from "../store/testing.ts";
import { loadEndorsements, rotateCoordinatorKey } from "./key-rotation.ts";
import { checkSharedIdentity, loadOrCreateSharedIdentity, loadSharedCoordinatorIdentity } from "./shared-identity.ts";

describe("loadOrCreateSharedIdentity", () => {
  it("gives every one of many callers creating the key at once the same key, and leaves no temporary file", async () => {
    const dir = await tempDir("flotilla-shared-id-");
    const ids = await Promise.all(Array.from({ length: 16 }, () => loadOrCreateSharedIdentity(join(dir, "coordinator.key"))));
    expect(new Set(ids.map((i) => i.id)).size).toBe(1);
    expect(await readdir(dir)).toEqual(["coordinator.key"]);
    expect((await loadOrCreateSharedIdentity(join(dir, "coordinator.key"))).id).toBe(ids[0]!.id);
  });
});

describe("checkSharedIdentity", () => {
  let db: Awaited<ReturnType<(typeof storeBackends)[0]["create"]>>;
  let store: Store;
  beforeEach(async () => {
    db = await storeBackends[0]!.create();
    store = db.store;
  });
  afterEach(async () => {
    await store.close();
    await db.drop();
  });

  it("records the first replica's key, accepts it again and refuses a replica with another key", async () => {
    const a = await loadSharedCoordinatorIdentity(await tempDir("flotilla-a-"));
    const b = await loadSharedCoordinatorIdentity(await tempDir("flotilla-b-"));
    await checkSharedIdentity(store.replicas, a, []);
    await checkSharedIdentity(store.replicas, a, []);
    await expect(checkSharedIdentity(store.replicas, b, [])).rejects.toThrow(/is not the key .* the database's replicas serve: replicas sharing a database must share the data directory/);
  });

  it("follows a rotation of the shared data directory's key and refuses the retired key after it", async () => {
    const dir = await tempDir("flotilla-rot-");
    const old = await loadSharedCoordinatorIdentity(dir);
    await checkSharedIdentity(store.replicas, old, []);
    const { to } = await rotateCoordinatorKey(dir);
    const chain = await loadEndorsements(dir);
    await checkSharedIdentity(store.replicas, to, chain);
    expect(await store.replicas.recordIdentity("x", Date.now())).toBe(to.id);
    await expect(checkSharedIdentity(store.replicas, old, chain)).rejects.toThrow(/is not the key/);
  });

  it("refuses a key with a forged endorsement from the recorded one", async () => {
    const a = await loadSharedCoordinatorIdentity(await tempDir("flotilla-a-"));
    const dir = await tempDir("flotilla-m-");
    const mallory = await loadSharedCoordinatorIdentity(dir);
    await checkSharedIdentity(store.replicas, a, []);
    // Mallory's own rotation yields a valid link from her old key, so rewrite it to claim a's key.
    const { to } = await rotateCoordinatorKey(dir);
    const [link] = await loadEndorsements(dir);
    const forged = { ...link!, oldKey: a.publicKey };
    await expect(checkSharedIdentity(store.replicas, to, [forged])).rejects.toThrow(/is not the key/);
    await expect(checkSharedIdentity(store.replicas, mallory, [forged])).rejects.toThrow(/is not the key/);
  });
});
