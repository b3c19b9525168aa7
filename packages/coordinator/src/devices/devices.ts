/** What admins do with devices: list and look at them, approve, reject, retire, label. */
import { setImmediate as nextTurn } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { adminv1, matchesSelector, parseSelector, SelectorError } from "@flotilla/protocol";
import { adminOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { DevicePatch, DeviceRow, Store } from "../store/index.ts";
import { deviceToProto, isOnline, lifecycleToProto, selectorFields } from "./convert.ts";
import { hello } from "./hello.ts";
import { LABEL_KEY, validateLabels } from "./labels.ts";
import type { Presence } from "./presence.ts";
import type { DeviceStatusFeed, StatusChange } from "./status-feed.ts";

/** The device an admin names by id or name, in the admin's organization; NotFound when none. */
export async function findAdminDevice(store: Store, hctx: HandlerContext, ref: string): Promise<DeviceRow> {
  const { orgId } = adminOf(hctx);
  if (!ref || ref.length > 128) throw new ConnectError("a device id or name is required", Code.InvalidArgument);
  const row = (await store.devices.getDevice(orgId, ref)) ?? (await store.devices.getDeviceByName(orgId, ref));
  if (!row) throw new ConnectError(`no device ${JSON.stringify(ref)}`, Code.NotFound);
  return row;
}

type DeviceMethods = Pick<
  ServiceImpl<typeof adminv1.AdminService>,
  "hello" | "listDevices" | "watchDevices" | "summarizeDevices" | "getDevice" | "approveDevice" | "rejectDevice" | "decommissionDevice" | "updateDeviceLabels"
>;

/** AdminService: the handshake, and the organization's devices (list, look at, approve, label). */
export function deviceMethods(ctx: ServiceContext, presence?: Presence, status?: DeviceStatusFeed): DeviceMethods {
  const { store, log } = ctx;
  // Presence not yet written (up to a second) is read from memory: this process knows better.
  const view = (row: DeviceRow) => deviceToProto(presence ? presence.overlay(row) : row, Date.now(), ctx.offlineAfterMs);

  const findDevice = (hctx: HandlerContext, ref: string) => findAdminDevice(store, hctx, ref);

  async function change(hctx: HandlerContext, ref: string, patch: DevicePatch, action: string) {
    const device = await findDevice(hctx, ref);
    const updated = await store.devices.updateDevice(device.orgId, device.id, patch, Date.now());
    if (!updated) throw new ConnectError(`no device ${JSON.stringify(ref)}`, Code.NotFound);
    log.info(`device ${action}`, { device: updated.id, name: updated.name, by: adminOf(hctx).keyId });
    if (updated.lifecycle !== device.lifecycle) status?.publish([{ orgId: updated.orgId, id: updated.id, name: updated.name, lifecycle: updated.lifecycle }]);
    return { device: view(updated) };
  }

  /** Changes the labels of every pending or approved device the selector matches, a page at a time. */
  async function labelMatching(hctx: HandlerContext, text: string, patch: Pick<DevicePatch, "setLabels" | "removeLabels">): Promise<number> {
    const selector = parsed(text);
    const { orgId } = adminOf(hctx);
    let updated = 0;
    let after: { name: string; id: string } | undefined;
    for (;;) {
      const rows = await store.devices.listDevicesPage(orgId, LABEL_BATCH, after);
      const ids = rows.filter((r) => (r.lifecycle === "pending" || r.lifecycle === "approved") && matchesSelector(selector, selectorFields(r))).map((r) => r.id);
      updated += await store.devices.updateDeviceLabels(orgId, ids, patch, Date.now());
      if (rows.length < LABEL_BATCH) break;
      const last = rows.at(-1)!;
      after = { name: last.name, id: last.id };
      // A turn of the event loop per page: other calls and HTTP/2 pings are served meanwhile.
      await nextTurn();
    }
    log.info("device labels changed", { selector: text, devices: updated, by: adminOf(hctx).keyId });
    return updated;
  }

  return {
    hello(req) {
      return { proof: hello(ctx, req.clientNonce) };
    },

    async listDevices(req, hctx) {
      const selector = parsed(req.selector);
      const { orgId } = adminOf(hctx);
      const match = req.selector.trim() ? (row: DeviceRow) => matchesSelector(selector, selectorFields(row)) : () => true;
      // The default view of a table (name order, no search or selector) stays an index range
      // scan, with one count for the total; search, another order, or a total with a selector
      // are filtered and sorted in memory.
      const sorted = req.search !== "" || (req.orderBy !== "" && req.orderBy !== "name") || req.descending;
      if (!sorted && req.includeTotal && !req.selector.trim()) {
        const page = await listDevicePage(store, orgId, Math.min(req.pageSize || MAX_DEVICE_PAGE, MAX_DEVICE_PAGE), req.pageToken, match, view);
        return { ...page, totalSize: await store.devices.countDevices(orgId) };
      }
      if (sorted || req.includeTotal) {
        const now = Date.now();
        const rows = (await store.devices.listDevices(orgId)).map((r) => (presence ? presence.overlay(r) : r));
        return sortedDevicePage(rows, req, match, (row) => deviceToProto(row, now, ctx.offlineAfterMs), (row) => statusName(row, now, ctx.offlineAfterMs));
      }
      // page_size 0: every device at once, as clients from before paging expect (never cut).
      if (req.pageSize === 0 && !req.pageToken) return { devices: (await store.devices.listDevices(orgId)).filter(match).map(view), nextPageToken: "" };
      return listDevicePage(store, orgId, Math.min(req.pageSize || MAX_DEVICE_PAGE, MAX_DEVICE_PAGE), req.pageToken, match, view);
    },

    async *watchDevices(_req, hctx) {
      if (!status) throw new ConnectError("device status is not watched on this coordinator", Code.Unimplemented);
      const { orgId } = adminOf(hctx);
      const sub = status.subscribe(orgId);
      try {
        // The stream is open: the reader reads the devices now and applies changes from here on.
        yield create(adminv1.WatchDevicesResponseSchema, {});
        while (!hctx.signal.aborted && !status.closed) {
          await sub.reader.wait(hctx.signal, WATCH_KEEPALIVE_MS);
          if (hctx.signal.aborted || status.closed) return;
          const { changes, resync } = sub.reader.take();
          yield create(adminv1.WatchDevicesResponseSchema, { resync, changes: resync ? [] : changes.map(changeToProto) });
        }
      } finally {
        sub.close();
      }
    },

    async summarizeDevices(_req, hctx) {
      return store.devices.summarizeDevices(adminOf(hctx).orgId, Date.now() - ctx.offlineAfterMs);
    },

    async getDevice(req, hctx) {
      return { device: view(await findDevice(hctx, req.device)) };
    },

    async approveDevice(req, hctx) {
      const device = await findDevice(hctx, req.device);
      if (device.lifecycle !== "pending" && device.lifecycle !== "approved") {
        throw new ConnectError(`device is ${device.lifecycle}; it cannot be approved`, Code.FailedPrecondition);
      }
      return change(hctx, device.id, { lifecycle: "approved" }, "approved");
    },

    async rejectDevice(req, hctx) {
      const device = await findDevice(hctx, req.device);
      if (device.lifecycle !== "pending") {
        throw new ConnectError(`only pending devices can be rejected (device is ${device.lifecycle})`, Code.FailedPrecondition);
      }
      return change(hctx, device.id, { lifecycle: "rejected" }, "rejected");
    },

    async decommissionDevice(req, hctx) {
      const device = await findDevice(hctx, req.device);
      if (device.lifecycle === "decommissioned") return { device: view(device) };
      return change(hctx, device.id, { lifecycle: "decommissioned" }, "decommissioned");
    },

    async updateDeviceLabels(req, hctx) {
      validateLabels(req.set);
      for (const k of req.remove) {
        if (!LABEL_KEY.test(k)) throw new ConnectError(`invalid label key ${JSON.stringify(k)}`, Code.InvalidArgument);
      }
      if (req.selector) {
        if (req.device) throw new ConnectError("name a device or give a selector, not both", Code.InvalidArgument);
        return { updated: await labelMatching(hctx, req.selector, { setLabels: req.set, removeLabels: req.remove }) };
      }
      const device = await findDevice(hctx, req.device);
      if (device.lifecycle === "decommissioned" || device.lifecycle === "rejected") {
        throw new ConnectError(`device is ${device.lifecycle}`, Code.FailedPrecondition);
      }
      return change(hctx, device.id, { setLabels: req.set, removeLabels: req.remove }, "labels changed");
    },
  };
}


/** A selector from a request; InvalidArgument when it does not parse. */
function parsed(text: string): ReturnType<typeof parseSelector> {
  try {
    return parseSelector(text);
  } catch (err) {
    if (err instanceof SelectorError) throw new ConnectError(err.message, Code.InvalidArgument);
    throw err;
  }
}

/** Devices read, and changed in one transaction, per batch of a bulk label change. */
const LABEL_BATCH = 500;

/** An empty message this often keeps an idle WatchDevices stream open through proxies. */
const WATCH_KEEPALIVE_MS = 15_000;

function changeToProto(c: StatusChange): adminv1.DeviceStatusChange {
  return create(adminv1.DeviceStatusChangeSchema, {
    id: c.id,
    name: c.name ?? "",
    lifecycle: c.lifecycle ? lifecycleToProto(c.lifecycle) : undefined,
    connection: c.connected === undefined ? undefined : c.connected ? adminv1.Connection.ONLINE : adminv1.Connection.OFFLINE,
    lastSeen: c.at === undefined ? undefined : timestampFromMs(c.at),
  });
}

/** The status the console shows: the lifecycle, or online/offline once approved. */
function statusName(row: DeviceRow, now: number, offlineAfterMs: number): string {
  if (row.lifecycle !== "approved") return row.lifecycle;
  return isOnline(row, now, offlineAfterMs) ? "online" : "offline";
}

const osOf = (row: DeviceRow) => String(row.facts.osPrettyName || row.facts.os || "");

/** The orders of ListDevices' order_by. */
const ORDERS = ["name", "status", "os", "agent", "last_seen"] as const;

/**
 * A page of ListDevices with search, order_by or a total: the organization's devices (already
 * read) filtered by selector and search, sorted, and cut at an offset carried in the page token.
 * Cost follows the organization's size on the coordinator; the caller gets one page.
 */
export function sortedDevicePage(
  rows: DeviceRow[],
  req: { search: string; orderBy: string; descending: boolean; pageSize: number; pageToken: string },
  match: (row: DeviceRow) => boolean,
  view: (row: DeviceRow) => adminv1.Device,
  statusOf: (row: DeviceRow) => string,
): { devices: adminv1.Device[]; nextPageToken: string; totalSize: number } {
  const order = req.orderBy || "name";
  if (!(ORDERS as readonly string[]).includes(order)) throw new ConnectError(`invalid order_by ${JSON.stringify(order)}: one of ${ORDERS.join(", ")}`, Code.InvalidArgument);
  if (req.search.length > 200) throw new ConnectError("search is at most 200 characters", Code.InvalidArgument);
  const q = req.search.trim().toLowerCase();
  const hit = (row: DeviceRow) =>
    !q || row.name.toLowerCase().includes(q) || row.id.toLowerCase().includes(q) || Object.entries(row.labels).some(([k, v]) => `${k}=${v}`.toLowerCase().includes(q));
  const found = rows.filter((r) => hit(r) && match(r));
  const keyed = found.map((row): [string | number, DeviceRow] => [
    order === "status" ? statusOf(row) : order === "os" ? osOf(row) : order === "agent" ? row.agentVersion : order === "last_seen" ? (row.lastSeenAt ?? 0) : row.name,
    row,
  ]);
  const cmp = (a: string | number, b: string | number) => (a < b ? -1 : a > b ? 1 : 0);
  keyed.sort(([ka, a], [kb, b]) => cmp(ka, kb) || cmp(a.name, b.name) || cmp(a.id, b.id));
  if (req.descending) keyed.reverse();
  const offset = parseOffsetToken(req.pageToken);
  const size = Math.min(req.pageSize || MAX_DEVICE_PAGE, MAX_DEVICE_PAGE);
  const page = keyed.slice(offset, offset + size).map(([, row]) => view(row));
  const next = offset + size < keyed.length ? Buffer.from(JSON.stringify([offset + size])).toString("base64url") : "";
  return { devices: page, nextPageToken: next, totalSize: keyed.length };
}

function parseOffsetToken(token: string): number {
  if (!token) return 0;
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (Array.isArray(v) && v.length === 1 && Number.isSafeInteger(v[0]) && v[0] >= 0) return v[0] as number;
  } catch {
    // fall through
  }
  throw new ConnectError("invalid page_token: pass next_page_token of the previous page (with the same search and order)", Code.InvalidArgument);
}

/** The largest page of ListDevices. */
export const MAX_DEVICE_PAGE = 1000;

/**
 * One page of ListDevices: up to `size` devices matching the selector, in name order, and the
 * token of the next page ("" after the last). With a selector, the store is read in pages of
 * `size` until enough match or the organization ends: cost follows the devices scanned.
 */
async function listDevicePage(
  store: Store,
  orgId: string,
  size: number,
  token: string,
  match: (row: DeviceRow) => boolean,
  view: (row: DeviceRow) => adminv1.Device,
): Promise<{ devices: adminv1.Device[]; nextPageToken: string }> {
  let after = parsePageToken(token);
  const devices: adminv1.Device[] = [];
  for (;;) {
    const rows = await store.devices.listDevicesPage(orgId, size, after);
    for (const row of rows) {
      if (!match(row)) continue;
      devices.push(view(row));
      if (devices.length === size) {
        const more = row !== rows.at(-1) || rows.length === size;
        return { devices, nextPageToken: more ? pageToken({ name: row.name, id: row.id }) : "" };
      }
    }
    const last = rows.at(-1);
    if (rows.length < size || !last) return { devices, nextPageToken: "" };
    after = { name: last.name, id: last.id };
  }
}

function pageToken(after: { name: string; id: string }): string {
  return Buffer.from(JSON.stringify([after.name, after.id])).toString("base64url");
}

function parsePageToken(token: string): { name: string; id: string } | undefined {
  if (!token) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "string") return { name: v[0], id: v[1] };
  } catch {
    // fall through
  }
  throw new ConnectError("invalid page_token: pass next_page_token of the previous page", Code.InvalidArgument);
}
