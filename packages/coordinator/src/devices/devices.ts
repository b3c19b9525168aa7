/** What admins do with devices: list and look at them, approve, reject, retire, label. */
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { adminv1, matchesSelector, parseSelector, SelectorError } from "@flotilla/protocol";
import { adminOf } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { DevicePatch, DeviceRow, Store } from "../store/index.ts";
import { deviceToProto, selectorFields } from "./convert.ts";
import { hello } from "./hello.ts";
import { LABEL_KEY, validateLabels } from "./labels.ts";
import type { Presence } from "./presence.ts";

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
  "hello" | "listDevices" | "getDevice" | "approveDevice" | "rejectDevice" | "decommissionDevice" | "updateDeviceLabels"
>;

/** AdminService: the handshake, and the organization's devices (list, look at, approve, label). */
export function deviceMethods(ctx: ServiceContext, presence?: Presence): DeviceMethods {
  const { store, log } = ctx;
  // Presence not yet written (up to a second) is read from memory: this process knows better.
  const view = (row: DeviceRow) => deviceToProto(presence ? presence.overlay(row) : row, Date.now(), ctx.offlineAfterMs);

  const findDevice = (hctx: HandlerContext, ref: string) => findAdminDevice(store, hctx, ref);

  async function change(hctx: HandlerContext, ref: string, patch: DevicePatch, action: string) {
    const device = await findDevice(hctx, ref);
    const updated = await store.devices.updateDevice(device.orgId, device.id, patch, Date.now());
    if (!updated) throw new ConnectError(`no device ${JSON.stringify(ref)}`, Code.NotFound);
    log.info(`device ${action}`, { device: updated.id, name: updated.name, by: adminOf(hctx).keyId });
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
      const match = (row: DeviceRow) => matchesSelector(selector, selectorFields(row));
      // page_size 0: every device at once, as clients from before paging expect (never cut).
      if (req.pageSize === 0 && !req.pageToken) return { devices: (await store.devices.listDevices(orgId)).filter(match).map(view), nextPageToken: "" };
      return listDevicePage(store, orgId, Math.min(req.pageSize || MAX_DEVICE_PAGE, MAX_DEVICE_PAGE), req.pageToken, match, view);
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
