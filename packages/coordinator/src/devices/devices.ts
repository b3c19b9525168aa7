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

  return {
    hello(req) {
      return { proof: hello(ctx, req.clientNonce) };
    },

    async listDevices(req, hctx) {
      let selector;
      try {
        selector = parseSelector(req.selector);
      } catch (err) {
        if (err instanceof SelectorError) throw new ConnectError(err.message, Code.InvalidArgument);
        throw err;
      }
      const rows = await store.devices.listDevices(adminOf(hctx).orgId);
      const devices = rows
        .filter((row) => matchesSelector(selector, selectorFields(row)))
        .map(view);
      return { devices };
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
      const device = await findDevice(hctx, req.device);
      if (device.lifecycle === "decommissioned" || device.lifecycle === "rejected") {
        throw new ConnectError(`device is ${device.lifecycle}`, Code.FailedPrecondition);
      }
      return change(hctx, device.id, { setLabels: req.set, removeLabels: req.remove }, "labels changed");
    },
  };
}

