import { silentLogger } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { LogLineRow, Store } from "../store/index.ts";
import { LocalEvents } from "../store/replicas/events.ts";
import { storeBackends } from "../store/testing.ts";
import { LogFeed, type FedLine } from "./feed.ts";

const NOW = 1_800_000_000_000;

describe("the log feed across replicas", () => {
  let db: Awaited<ReturnType<(typeof storeBackends)[0]["create"]>>;
  let store: Store;
  let events: LocalEvents;
  let a: LogFeed;
  let b: LogFeed;
  let deviceId: string;
  beforeEach(async () => {
    db = await storeBackends[0]!.create();
    store = db.store;
    deviceId = "dev1";
    // Both replicas hear each other through one bus, as through NOTIFY.
    events = new LocalEvents();
    a = new LogFeed({ events, telemetry: store.telemetry, replicaId: "a", log: silentLogger });
    b = new LogFeed({ events, telemetry: store.telemetry, replicaId: "b", log: silentLogger });
  });
  afterEach(async () => {
    await a.close();
    await b.close();
    await store.close();
    await db.drop();
  });

  /** Stores lines `seqs` through replica A; announces them unless the announcement is lost. */
  async function ship(seqs: number[], announce = true): Promise<void> {
    const { added } = await store.telemetry.ingestLogs("orgA", deviceId, "logs", seqs.map((seq) => ({ seq, time: NOW + seq, unit: "app", source: "file", line: `line ${seq}` })), { droppedThrough: 0, droppedTotal: 0 }, NOW + 100);
    const fed = added.map((l: LogLineRow): FedLine => ({ ...l, deviceName: "box" }));
    if (announce) a.publish("orgA", fed);
  }

  it("hands another replica's lines to followers here, once each and in order, catching up announcements it missed", async () => {
    const got: string[] = [];
    b.subscribe("orgA", (lines) => got.push(...lines.map((l) => `${l.deviceName}: ${l.line}`)));
    await ship([1, 2]);
    await waitFor("lines 1-2", () => got.length === 2);
    await ship([3, 4], false); // announcement lost
    await ship([5]);
    await waitFor("lines 3-5", () => got.length === 5);
    await ship([6, 7], false);
    events.resynced(); // the listening connection came back
    await waitFor("lines 6-7", () => got.length === 7);
    expect(got).toEqual([1, 2, 3, 4, 5, 6, 7].map((n) => `box: line ${n}`));
  });

  it("reads nothing for an organization nobody here follows, and never hands a replica its own lines twice", async () => {
    const reads: unknown[] = [];
    const counting = new LogFeed({ events, telemetry: { queryLogs: (...args) => (reads.push(args), store.telemetry.queryLogs(...args)) }, replicaId: "c", log: silentLogger });
    const own: string[] = [];
    a.subscribe("orgA", (lines) => own.push(...lines.map((l) => l.line)));
    await ship([1]);
    await b.close();
    await counting.close();
    expect(reads).toEqual([]);
    expect(own).toEqual(["line 1"]);
  });
});
