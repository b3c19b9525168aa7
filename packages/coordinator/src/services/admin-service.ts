import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  adminv1,
  encodeJoinString,
  flattenFacts,
  hashSecret,
  keyPin,
  matchesSelector,
  newId,
  newSecret,
  parseSelector,
  SelectorError,
} from "@flotilla/protocol";
import { adminOf } from "../auth/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { DevicePatch, DeviceRow, JoinTokenRow } from "../store/index.ts";
import { accessMethods } from "./access-service.ts";
import { deviceToProto, factsFromJson } from "./convert.ts";
import { hello } from "./hello.ts";

const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^[A-Za-z0-9._:+@-]{0,63}$/;
const MAX_LABELS = 64;
const MAX_TOKEN_SECONDS = 365 * 24 * 3600;

/** Checks a label map from the network; throws InvalidArgument naming the bad entry. */
export function validateLabels(labels: Record<string, string>): void {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw new ConnectError(`at most ${MAX_LABELS} labels`, Code.InvalidArgument);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k)) throw new ConnectError(`invalid label key ${JSON.stringify(k)}`, Code.InvalidArgument);
    if (!LABEL_VALUE.test(v)) {
      throw new ConnectError(`invalid value for label ${k}: ${JSON.stringify(v)}`, Code.InvalidArgument);
    }
  }
}

function tokenToProto(t: JoinTokenRow): adminv1.JoinToken {
  return create(adminv1.JoinTokenSchema, {
    id: t.id,
    labels: t.labels,
    usesAllowed: t.usesAllowed,
    uses: t.uses,
    expiresAt: timestampFromMs(t.expiresAt),
    autoApprove: t.autoApprove,
    createdAt: timestampFromMs(t.createdAt),
    revoked: t.revokedAt !== null,
  });
}

/** The admin service: devices and join tokens here, access control in access-service.ts. */
export function adminService(ctx: ServiceContext): ServiceImpl<typeof adminv1.AdminService> {
  return { ...fleetMethods(ctx), ...accessMethods(ctx) };
}

type FleetMethods = Pick<
  ServiceImpl<typeof adminv1.AdminService>,
  | "hello"
  | "createJoinToken"
  | "listJoinTokens"
  | "revokeJoinToken"
  | "listDevices"
  | "getDevice"
  | "approveDevice"
  | "rejectDevice"
  | "decommissionDevice"
  | "updateDeviceLabels"
>;

function fleetMethods(ctx: ServiceContext): FleetMethods {
  const { store, log } = ctx;
  const view = (row: DeviceRow) => deviceToProto(row, Date.now(), ctx.offlineAfterMs);

  async function findDevice(hctx: HandlerContext, ref: string): Promise<DeviceRow> {
    const { orgId } = adminOf(hctx);
    if (!ref || ref.length > 128) throw new ConnectError("a device id or name is required", Code.InvalidArgument);
    const row = (await store.devices.getDevice(orgId, ref)) ?? (await store.devices.getDeviceByName(orgId, ref));
    if (!row) throw new ConnectError(`no device ${JSON.stringify(ref)}`, Code.NotFound);
    return row;
  }

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

    async createJoinToken(req, hctx) {
      const p = adminOf(hctx);
      validateLabels(req.labels);
      const seconds = Number(req.expiresInSeconds || 24n * 3600n);
      if (seconds <= 0 || seconds > MAX_TOKEN_SECONDS) {
        throw new ConnectError("expiry must be between 1 second and 365 days", Code.InvalidArgument);
      }
      const url = req.coordinatorUrl || ctx.publicUrl;
      if (!/^https?:\/\/[^\s/]+$/.test(url)) throw new ConnectError("coordinator_url must be http(s)://host:port", Code.InvalidArgument);
      const now = Date.now();
      const secret = newSecret(24);
      const row: JoinTokenRow = {
        id: newId(10),
        orgId: p.orgId,
        secretHash: hashSecret(secret),
        labels: req.labels,
        usesAllowed: req.usesAllowed,
        uses: 0,
        expiresAt: now + seconds * 1000,
        autoApprove: req.autoApprove,
        createdAt: now,
        revokedAt: null,
      };
      await store.devices.createJoinToken(row);
      log.info("join token created", { token: row.id, by: p.keyId });
      return {
        token: tokenToProto(row),
        joinString: encodeJoinString({ url, pin: keyPin(ctx.identity.publicKey), secret: `${row.id}.${secret}` }),
      };
    },

    async listJoinTokens(_req, hctx) {
      return { tokens: (await store.devices.listJoinTokens(adminOf(hctx).orgId)).map(tokenToProto) };
    },

    async revokeJoinToken(req, hctx) {
      if (!(await store.devices.revokeJoinToken(adminOf(hctx).orgId, req.id, Date.now()))) {
        throw new ConnectError(`no join token ${JSON.stringify(req.id)}`, Code.NotFound);
      }
      return {};
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
        .filter((row) => matchesSelector(selector, { ...flattenFacts(factsFromJson(row.facts)), ...row.labels }))
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

