/**
 * What the web console's device table asks of the coordinator: ListDevices with search, order and
 * a total, cut in pages; and WatchDevices, the stream of status changes (presence and approvals),
 * scoped to the organization, readable by a viewer, with a bounded queue per reader.
 */
import { create } from "@bufbuild/protobuf";
import { adminv1, commonv1, enrollMessage, generateIdentity, parseJoinString } from "@flotilla/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { enrollDevice, SETUP_CODE, startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { DeviceStatusFeed } from "./status-feed.ts";

let t: TestCoordinator;
beforeEach(async () => {
  t = await startTestCoordinator();
});
afterEach(async () => {
  await t.close();
});

/** The next message of a stream, or a failure after `ms`. */
async function next<T>(it: AsyncIterator<T>, what: string, ms = 20_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([it.next(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)))]);
  clearTimeout(timer);
  if (r.done) throw new Error(`the stream ended before ${what}`);
  return r.value;
}

/** Messages of the stream until one has a change of `id` that `ok` accepts. */
async function changeOf(it: AsyncIterator<adminv1.WatchDevicesResponse>, id: string, ok: (c: adminv1.DeviceStatusChange) => boolean, what: string) {
  for (;;) {
    const m = await next(it, what);
    const c = m.changes.find((x) => x.id === id && ok(x));
    if (c) return c;
  }
}

describe("ListDevices for the device table", () => {
  it("searches, sorts, counts and pages on the coordinator", async () => {
    const owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await enrollDevice(t, owner, `box-${i}`)).id);
    await t.admin.updateDeviceLabels({ device: ids[3]!, set: { site: "Lisbon" } }, owner);
    await t.admin.updateDeviceLabels({ device: ids[5]!, set: { site: "lisbon-2" } }, owner);

    const found = await t.admin.listDevices({ search: "LISBON", includeTotal: true }, owner);
    expect(found.devices.map((d) => d.name)).toEqual(["box-3", "box-5"]);
    expect(found.totalSize).toBe(2);
    expect((await t.admin.listDevices({ search: ids[6]!.slice(-10) }, owner)).devices.map((d) => d.name)).toEqual(["box-6"]);

    const names: string[] = [];
    let pageToken = "";
    do {
      const page = await t.admin.listDevices({ orderBy: "name", descending: true, includeTotal: true, pageSize: 3, pageToken }, owner);
      expect(page.totalSize).toBe(7);
      expect(page.devices.length).toBeLessThanOrEqual(3);
      names.push(...page.devices.map((d) => d.name));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(names).toEqual(["box-6", "box-5", "box-4", "box-3", "box-2", "box-1", "box-0"]);

    // The default view (name order, no search or selector): index pages with a count.
    const first = await t.admin.listDevices({ orderBy: "name", includeTotal: true, pageSize: 4 }, owner);
    expect(first.totalSize).toBe(7);
    expect(first.devices.map((d) => d.name)).toEqual(["box-0", "box-1", "box-2", "box-3"]);
    const second = await t.admin.listDevices({ orderBy: "name", includeTotal: true, pageSize: 4, pageToken: first.nextPageToken }, owner);
    expect(second.devices.map((d) => d.name)).toEqual(["box-4", "box-5", "box-6"]);
    expect(second.nextPageToken).toBe("");

    const bySelector = await t.admin.listDevices({ selector: "site=Lisbon", includeTotal: true }, owner);
    expect(bySelector.devices.map((d) => d.name)).toEqual(["box-3"]);
    await expect(t.admin.listDevices({ orderBy: "colour" }, owner)).rejects.toThrow(/invalid order_by/);
    await expect(t.admin.listDevices({ orderBy: "status", pageToken: "garbage" }, owner)).rejects.toThrow(/invalid page_token/);
  });
});

describe("WatchDevices", () => {
  it("tells a viewer of the organization when a device connects, disconnects and is approved", async () => {
    const owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
    const d = await enrollDevice(t, owner, "watched");
    const viewer = await t.as(d.orgId, "viewer");
    const stop = new AbortController();
    const it = t.admin.watchDevices({}, { headers: viewer.headers, signal: stop.signal })[Symbol.asyncIterator]();
    try {
      const first = await next(it, "the first message");
      expect(first.changes).toEqual([]);
      expect(first.resync).toBe(false);

      const agent = new AbortController();
      const watch = t.agent.watch({ agentVersion: "1.0.0" }, { headers: d.headers, signal: agent.signal })[Symbol.asyncIterator]();
      await next(watch, "the device's desired state");
      const up = await changeOf(it, d.id, (c) => c.connection === adminv1.Connection.ONLINE, "the device online");
      expect(up.lastSeen).toBeDefined();
      agent.abort();
      await changeOf(it, d.id, (c) => c.connection === adminv1.Connection.OFFLINE, "the device offline");

      // An enrollment waiting for approval, then its approval.
      const pending = await enrollPending(owner);
      await changeOf(it, pending, (c) => c.lifecycle === commonv1.Lifecycle.PENDING && c.name === "newcomer", "the enrollment");
      await t.admin.approveDevice({ device: pending }, owner);
      await changeOf(it, pending, (c) => c.lifecycle === commonv1.Lifecycle.APPROVED, "the approval");
    } finally {
      stop.abort();
    }
  });

  it("hands an organization's changes to its own readers only, and cuts a reader that falls behind to resync", () => {
    const feed = new DeviceStatusFeed();
    const slow = feed.subscribe("org_a", 3);
    const fast = feed.subscribe("org_a", 100);
    const other = feed.subscribe("org_b");
    for (let i = 0; i < 5; i++) feed.publish([{ orgId: "org_a", id: `dev_${i}`, connected: true, at: i }]);
    expect(slow.reader.take()).toEqual({ changes: [], resync: true });
    expect(fast.reader.take().changes.map((c) => c.id)).toEqual(["dev_0", "dev_1", "dev_2", "dev_3", "dev_4"]);
    expect(other.reader.take()).toEqual({ changes: [], resync: false });
    // After the resync was read, the slow reader gets changes again.
    feed.publish([{ orgId: "org_a", id: "dev_9", connected: false, at: 9 }]);
    expect(slow.reader.take().changes.map((c) => c.id)).toEqual(["dev_9"]);
    slow.close();
    fast.close();
    other.close();
    feed.close();
  });
});

/** Enrolls a device named "newcomer" through a join token without auto-approval; its id. */
async function enrollPending(owner: { headers: Record<string, string> }): Promise<string> {
  const tok = await t.admin.createJoinToken({ usesAllowed: 1, autoApprove: false }, owner);
  const secret = parseJoinString(tok.joinString).secret;
  const id = generateIdentity();
  const ch = await t.challenge();
  const r = await t.agent.enroll({ joinSecret: secret, publicKey: id.publicKey, challenge: ch, signature: id.sign(enrollMessage(ch, secret)), facts: create(commonv1.FactsSchema, { hostname: "newcomer" }) });
  expect(r.lifecycle).toBe(commonv1.Lifecycle.PENDING);
  return r.deviceId;
}
