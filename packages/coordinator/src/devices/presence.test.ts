import { silentLogger } from "@flotilla/protocol";
import { describe, expect, it } from "vitest";
import { enrollApproved, storeBackends, storeForEachTest } from "../store/testing.ts";
import { Presence } from "./presence.ts";

const NOW = Date.now();

async function until(what: string, check: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("device presence", () => {
  const fx = storeForEachTest(storeBackends[0]!, NOW);

  const enroll = (n: number) => enrollApproved(fx.store, n, NOW);
  const row = (id: string) => fx.store.devices.getDevice("orgA", id);

  it("writes connects and keep-alives of many devices in one flush, and shows them to readers before", async () => {
    const ids = await enroll(3);
    const heard: string[] = [];
    const p = new Presence(fx.store, { flushMs: 3_600_000, log: silentLogger, onConnected: (_o, id) => heard.push(id) });
    for (const id of ids) p.connect("orgA", id);
    const before = (await row(ids[0]!))!;
    expect(before.connected).toBe(false);
    expect(p.overlay(before)).toMatchObject({ connected: true });
    expect(heard).toEqual([]);
    await p.flush();
    for (const id of ids) expect(await row(id)).toMatchObject({ connected: true });
    // The rollout engine hears of each connect once, after the row says so.
    expect(heard).toEqual(ids);
    p.seen("orgA", ids[0]!);
    await p.flush();
    expect(heard).toEqual(ids);
    await p.close();
  });

  it("marks a device disconnected when its last stream here closes, not before", async () => {
    const [id] = await enroll(1);
    const p = new Presence(fx.store, { flushMs: 3_600_000, log: silentLogger });
    p.connect("orgA", id!);
    p.connect("orgA", id!);
    await p.flush();
    p.disconnect("orgA", id!);
    await p.flush();
    expect(await row(id!)).toMatchObject({ connected: true });
    p.disconnect("orgA", id!);
    expect(p.overlay((await row(id!))!).connected).toBe(false);
    await p.flush();
    expect(await row(id!)).toMatchObject({ connected: false });
    // A keep-alive after the stream closed does not bring it back.
    p.seen("orgA", id!);
    await p.flush();
    expect(await row(id!)).toMatchObject({ connected: false });
    await p.close();
  });

  it("writes on its own once per interval", async () => {
    const [id] = await enroll(1);
    const p = new Presence(fx.store, { flushMs: 50, log: silentLogger });
    p.connect("orgA", id!);
    await until("the row says connected", async () => (await row(id!))?.connected === true);
    await p.close();
  });

  it("writes every device connected here as disconnected when it closes", async () => {
    const ids = await enroll(2);
    const p = new Presence(fx.store, { flushMs: 3_600_000, log: silentLogger });
    for (const id of ids) p.connect("orgA", id);
    await p.flush();
    await p.close();
    for (const id of ids) expect(await row(id)).toMatchObject({ connected: false });
  });

  it("keeps what it could not write for the next flush", async () => {
    const [id] = await enroll(1);
    const p = new Presence(fx.store, { flushMs: 3_600_000, log: silentLogger });
    const real = fx.store.devices.recordPresence.bind(fx.store.devices);
    let fail = true;
    fx.store.devices.recordPresence = async (...args) => {
      if (fail) throw new Error("database is locked");
      return real(...args);
    };
    p.connect("orgA", id!);
    await p.flush();
    expect(await row(id!)).toMatchObject({ connected: false });
    expect(p.overlay((await row(id!))!).connected).toBe(true);
    fail = false;
    await p.flush();
    expect(await row(id!)).toMatchObject({ connected: true });
    await p.close();
  });
});
