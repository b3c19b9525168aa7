/**
 * The hub's fan-out: a change to many connected devices reaches each device's subscription with
 * its new desired state, read in a few batched statements rather than once per device; when a
 * batched read fails, each subscription is still told, and reads its device itself.
 */
import { setMaxListeners } from "node:events";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import type { Store } from "../store/index.ts";
import { enrollApproved, storeBackends, storeForEachTest } from "../store/testing.ts";
import { Hub, type DesiredSnapshot, type Subscription } from "./hub.ts";

const NOW = Date.now();

/**
 * The store, with every call of its device and release methods counted by name (and the ids
 * each batched device read asked for added to `read`).
 */
function counted(store: Store, calls: Map<string, number>, fail?: Set<string>, read?: Set<string>): Store {
  const wrap = <T extends object>(part: T, prefix: string): T =>
    new Proxy(part, {
      get(target, key, receiver) {
        const v = Reflect.get(target, key, receiver) as unknown;
        if (typeof v !== "function") return v;
        const name = `${prefix}.${String(key)}`;
        return (...args: unknown[]) => {
          calls.set(name, (calls.get(name) ?? 0) + 1);
          if (name === "devices.getDevicesByIds") for (const id of args[0] as string[]) read?.add(id);
          if (fail?.has(name)) return Promise.reject(new Error(`${name} failed`));
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  return { ...store, devices: wrap(store.devices, "devices"), releases: wrap(store.releases, "releases") } as Store;
}

/** Collects what each subscription is told, until `signal` aborts. */
function listen(subs: Map<string, Subscription>, signal: AbortSignal) {
  const told = new Map<string, (DesiredSnapshot | undefined)[]>();
  setMaxListeners(subs.size + 10, signal);
  for (const [id, sub] of subs) {
    told.set(id, []);
    void (async () => {
      while (!signal.aborted) {
        if ((await sub.wait(signal, 60_000)) === "changed") told.get(id)!.push(sub.take());
      }
    })();
  }
  return told;
}

for (const backend of storeBackends) {
  describe.skipIf(!backend.enabled)(`hub fan-out (${backend.name})`, () => {
    const fx = storeForEachTest(backend, NOW);

    const enroll = (n: number) => enrollApproved(fx.store, n, NOW);

    it("hands a label change of 600 connected devices to each in a few batched reads, none per device", { timeout: 120_000 }, async () => {
      const ids = await enroll(600);
      const calls = new Map<string, number>();
      const hub = new Hub(counted(fx.store, calls));
      const subs = new Map(ids.map((id) => [id, hub.subscribe(id)]));
      const abort = new AbortController();
      const told = listen(subs, abort.signal);
      try {
        expect(await fx.store.devices.updateDeviceLabels("orgA", ids, { setLabels: { k: "v" } }, NOW + 1)).toBe(600);
        // Each device is handed a snapshot that has the change (PostgreSQL delivers its
        // notifications a moment after the commit).
        await waitFor("every device handed its new labels", () =>
          ids.every((id) => told.get(id)!.some((s) => s?.device.id === id && s.device.labels.k === "v")),
        );
        const reads = (calls.get("devices.getDevicesByIds") ?? 0) + (calls.get("releases.listDeviceReleasesOf") ?? 0);
        // Two statements per 400 devices when every notification arrives at once (SQLite, in
        // this process); PostgreSQL's arrive in a few bursts, each read as one batch.
        if (backend.name === "SQLite") expect(reads).toBe(2 * 2);
        else expect(reads).toBeLessThanOrEqual(30);
        expect(calls.get("devices.getDevice") ?? 0).toBe(0);
        expect(calls.get("releases.listDeviceReleases") ?? 0).toBe(0);
      } finally {
        abort.abort();
        for (const sub of subs.values()) sub.close();
        hub.close();
      }
    });

    it("hands each device its own releases and skips devices with no stream here", async () => {
      const [a, b, idle] = await enroll(3);
      const release = { orgId: "orgA", name: "webapp", counter: 1, version: "1.0.0", kind: "bundle", targetPath: "webapp/1/webapp.tar.gz", sha256: "1".repeat(64), length: 1001, meta: "{}", createdAt: NOW };
      await fx.store.releases.addReleases([release]);
      const read = new Set<string>();
      const hub = new Hub(counted(fx.store, new Map(), undefined, read));
      const subs = new Map([a!, b!].map((id) => [id, hub.subscribe(id)]));
      const abort = new AbortController();
      const told = listen(subs, abort.signal);
      try {
        expect(await fx.store.releases.setDesiredRelease("orgA", a!, release, NOW + 1)).toBe(true);
        expect(await fx.store.releases.setDesiredRelease("orgA", idle!, release, NOW + 1)).toBe(true);
        const got = await waitFor("device a handed its release", () => told.get(a!)!.find((s) => s?.releases.length === 1));
        expect(got.releases.map((r) => [r.deviceId, r.name, r.desiredCounter])).toEqual([[a, "webapp", 1]]);
        // (PostgreSQL may still deliver the notifications of their enrollment.)
        expect(told.get(b!)!.every((s) => s?.releases.length === 0)).toBe(true);
        // Nothing was read for the device without a stream.
        expect(read.has(idle!)).toBe(false);
      } finally {
        abort.abort();
        for (const sub of subs.values()) sub.close();
        hub.close();
      }
    });

    it("still tells every device when the batched read fails, so its stream reads the device itself", async () => {
      const ids = await enroll(5);
      const calls = new Map<string, number>();
      const hub = new Hub(counted(fx.store, calls, new Set(["devices.getDevicesByIds"])));
      const subs = new Map(ids.map((id) => [id, hub.subscribe(id)]));
      const abort = new AbortController();
      const told = listen(subs, abort.signal);
      try {
        await fx.store.devices.updateDeviceLabels("orgA", ids, { setLabels: { k: "v" } }, NOW + 1);
        await waitFor("every device told", () => ids.every((id) => told.get(id)!.length > 0));
        // (PostgreSQL may also deliver the notifications of their enrollment, just as unread.)
        for (const id of ids) expect(told.get(id)!.every((s) => s === undefined)).toBe(true);
        expect(calls.get("devices.getDevicesByIds")).toBeGreaterThan(0);
      } finally {
        abort.abort();
        for (const sub of subs.values()) sub.close();
        hub.close();
      }
    });
  });
}
