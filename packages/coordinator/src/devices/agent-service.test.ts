/**
 * Report and Watch against a real coordinator on a loopback port (SQLite): one report is one
 * batch, revocation takes effect on the next call, and presence is seen at once by `device show`
 * and lands in the table within a flush.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { adminv1, agentv1, commonv1, coordinatorTransport, generateIdentity } from "@flotilla/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enrollDevice, SETUP_CODE, startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { keepaliveWaitMs } from "./agent-service.ts";

let t: TestCoordinator;
let owner: { headers: Record<string, string> };

beforeAll(async () => {
  t = await startTestCoordinator();
  owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
});

afterAll(async () => {
  await t.close();
});

async function until<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const facts = (seq: number, agentVersion: string) =>
  create(agentv1.OutboxEntrySchema, { stream: "facts", seq: BigInt(seq), body: { case: "facts", value: create(commonv1.FactsSchema, { hostname: "box", agentVersion }) } });
const status = (seq: number, generation: number) =>
  create(agentv1.OutboxEntrySchema, { stream: "status", seq: BigInt(seq), body: { case: "status", value: create(agentv1.StatusSchema, { observedGeneration: BigInt(generation) }) } });

describe("agent service", () => {
  it("applies a report's new entries as one batch, the last of each kind winning, and acknowledges each stream", async () => {
    const d = await enrollDevice(t, owner, "reporter");
    const res = await t.agent.report({ entries: [facts(1, "1.0.0"), status(1, 1), facts(2, "1.1.0")] }, { headers: d.headers });
    expect(res.acks.map((a) => [a.stream, Number(a.seq)])).toEqual([["facts", 2], ["status", 1]]);
    const row = await t.coord.store.devices.getDevice(d.orgId, d.id);
    expect(row).toMatchObject({ agentVersion: "1.1.0", observedGeneration: 1 });
    expect(await t.coord.store.devices.getAckedSeqs(d.id)).toEqual(new Map([["facts", 2], ["status", 1]]));

    // Entries already acknowledged are acknowledged again and not applied.
    const again = await t.agent.report({ entries: [facts(2, "evil"), facts(3, "1.2.0")] }, { headers: d.headers });
    expect(again.acks.map((a) => [a.stream, Number(a.seq)])).toEqual([["facts", 3]]);
    expect((await t.coord.store.devices.getDevice(d.orgId, d.id))?.agentVersion).toBe("1.2.0");
    const old = await t.agent.report({ entries: [facts(1, "evil")] }, { headers: d.headers });
    expect(old.acks.map((a) => [a.stream, Number(a.seq)])).toEqual([["facts", 3]]);
    expect((await t.coord.store.devices.getDevice(d.orgId, d.id))?.agentVersion).toBe("1.2.0");
  });

  it("refuses the next report of a device decommissioned in between, and writes nothing of it", async () => {
    const d = await enrollDevice(t, owner, "retired");
    await t.agent.report({ entries: [facts(1, "1.0.0")] }, { headers: d.headers });
    await t.admin.decommissionDevice({ device: d.id }, owner);
    const err = await t.agent.report({ entries: [facts(2, "2.0.0")] }, { headers: d.headers }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.FailedPrecondition);
    expect((await t.coord.store.devices.getDevice(d.orgId, d.id))?.agentVersion).toBe("1.0.0");
    expect(await t.coord.store.devices.getAckedSeq(d.id, "facts")).toBe(1);
  });

  it("shows a device online while its Watch stream is open, and writes connected and then disconnected to its row", async () => {
    const d = await enrollDevice(t, owner, "watcher");
    const abort = new AbortController();
    const stream = t.agent.watch({ agentVersion: "1.0.0" }, { headers: d.headers, signal: abort.signal });
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.value?.event.case).toBe("desired");
    const shown = await until("device show says online", () => t.admin.getDevice({ device: d.id }, owner), (r) => r.device?.connection === adminv1.Connection.ONLINE);
    expect(shown.device?.lastSeen).toBeDefined();
    await until("its row says connected", () => t.coord.store.devices.getDevice(d.orgId, d.id), (r) => r?.connected === true);
    abort.abort();
    await it.next().catch(() => undefined);
    await until("its row says disconnected", () => t.coord.store.devices.getDevice(d.orgId, d.id), (r) => r?.connected === false);
  });

  it("keeps delivering desired state to a device while another device's Watch stream goes unread", async () => {
    const stuck = await enrollDevice(t, owner, "stuck");
    const live = await enrollDevice(t, owner, "live");
    // Each device on its own connection, as agents are: HTTP/2 flow control is per stream and
    // per connection.
    const [trStuck, trLive] = await Promise.all([coordinatorTransport({ url: t.coord.url }), coordinatorTransport({ url: t.coord.url })]);
    const abort = new AbortController();
    try {
      const stuckStream = createClient(agentv1.AgentService, trStuck.transport).watch({}, { headers: stuck.headers, signal: abort.signal })[Symbol.asyncIterator]();
      expect((await stuckStream.next()).value?.event.case).toBe("desired");
      const liveStream = createClient(agentv1.AgentService, trLive.transport).watch({}, { headers: live.headers, signal: abort.signal })[Symbol.asyncIterator]();
      expect((await liveStream.next()).value?.event.case).toBe("desired");

      // Far more than the stream's 64 KiB flow-control window of changes for the device that
      // never reads again (each DesiredState carries ~1 KiB of labels).
      const big = Object.fromEntries(Array.from({ length: 16 }, (_, k) => [`k${k}`, "x".repeat(60)]));
      for (let i = 0; i < 150; i++) await t.admin.updateDeviceLabels({ device: stuck.id, set: { ...big, n: String(i) } }, owner);

      await t.admin.updateDeviceLabels({ device: live.id, set: { wave: "now" } }, owner);
      // Keep-alives may come first; the change must follow within the deadline.
      const deadline = Date.now() + 10_000;
      let wave: string | undefined;
      while (wave !== "now" && Date.now() < deadline) {
        const next = await Promise.race([
          liveStream.next(),
          new Promise<"deadline">((r) => setTimeout(() => r("deadline"), deadline - Date.now()).unref()),
        ]);
        if (next === "deadline" || next.done) break;
        if (next.value.event.case === "desired") wave = next.value.event.value.labels.wave;
      }
      expect(wave).toBe("now");
    } finally {
      abort.abort();
      trStuck.close();
      trLive.close();
    }
  });
});

describe("keep-alive timing", () => {
  it("waits the interval less up to a fifth, at random, so streams opened together drift apart and none is late", () => {
    expect(keepaliveWaitMs(15_000, () => 0)).toBe(15_000);
    expect(keepaliveWaitMs(15_000, () => 0.5)).toBe(13_500);
    expect(keepaliveWaitMs(15_000, () => 0.999999)).toBe(12_000);
    // Seven thousand streams opened in the same second: after one interval their keep-alives
    // fall over three seconds, not into the same turn of the event loop.
    const waits = Array.from({ length: 7000 }, () => keepaliveWaitMs(15_000));
    expect(Math.max(...waits)).toBeLessThanOrEqual(15_000);
    expect(Math.min(...waits)).toBeGreaterThanOrEqual(12_000);
    const perSecond = new Map<number, number>();
    for (const w of waits) perSecond.set(Math.floor(w / 1000), (perSecond.get(Math.floor(w / 1000)) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThan(3500);
  });
});
