/**
 * Moving a device to another organization of this coordinator (docs/device-move.md). Needs
 * devices:write in both organizations, and, when the old organization has a signing root, an
 * endorsement signed by the threshold of that root's keys: the agent trusts the new
 * organization's root only on that signature.
 */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  DeviceMoveRefused,
  parseDeviceMove,
  tufRootDigest,
  verifyDeviceMove,
  type adminv1,
  type DeviceMoveEndorsement,
  type DeviceMoveStatement,
} from "@flotilla/protocol";
import { adminOfOtherOrganization } from "../access/second-organization.ts";
import { adminOf, remoteAddressKey } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { Store } from "../store/index.ts";
import { deviceToProto } from "./convert.ts";
import { findAdminDevice } from "./devices.ts";

/** An organization's current TUF root metadata as JSON, or undefined while it has none. */
export type RootReader = (orgId: string) => Promise<unknown>;

/** AdminService.MoveDevice. */
export function moveMethods(ctx: ServiceContext, currentRoot: RootReader): Pick<ServiceImpl<typeof adminv1.AdminService>, "moveDevice"> {
  const { store, log, auditor } = ctx;
  return {
    async moveDevice(req, hctx) {
      const p = adminOf(hctx);
      const device = await findAdminDevice(store, hctx, req.device);
      const { org, principal } = await adminOfOtherOrganization(store, req.destinationCredential, req.toOrganization, "devices:write");
      if (org.id === p.orgId) throw new ConnectError(`device ${device.name} is already in organization ${org.name}`, Code.FailedPrecondition);
      if (device.lifecycle === "decommissioned" || device.lifecycle === "rejected") {
        throw new ConnectError(`device is ${device.lifecycle}; it cannot be moved`, Code.FailedPrecondition);
      }
      const [oldRoot, newRoot] = await Promise.all([currentRoot(p.orgId), currentRoot(org.id)]);
      const statement: DeviceMoveStatement = { deviceId: device.id, fromOrg: p.orgId, toOrg: org.id, toRoot: newRoot ? tufRootDigest(newRoot) : null };
      if (req.prepare) return { statement: JSON.stringify(statement), endorsementRequired: oldRoot !== undefined };

      let endorsement: DeviceMoveEndorsement = { ...statement, signatures: [] };
      if (oldRoot !== undefined) {
        if (!req.endorsement) {
          throw new ConnectError("the old organization has a signing root: the move must be signed by its root keys (flotilla device move signs it)", Code.FailedPrecondition);
        }
        try {
          endorsement = parseDeviceMove(req.endorsement);
          const signed: DeviceMoveStatement = { deviceId: endorsement.deviceId, fromOrg: endorsement.fromOrg, toOrg: endorsement.toOrg, toRoot: endorsement.toRoot };
          if (JSON.stringify(signed) !== JSON.stringify(statement)) throw new DeviceMoveRefused("the endorsement is for another move, or the destination's root changed since it was signed: sign again");
          verifyDeviceMove(endorsement, oldRoot);
        } catch (err) {
          if (err instanceof DeviceMoveRefused) throw new ConnectError(err.message, Code.PermissionDenied);
          throw err;
        }
      }
      const result = await store.deviceMoves.moveDevice(device.id, p.orgId, org.id, JSON.stringify(endorsement), Date.now());
      if (!result.ok) {
        switch (result.reason) {
          case "no-device":
            throw new ConnectError(`no device ${JSON.stringify(req.device)}`, Code.NotFound);
          case "claimed":
            throw new ConnectError(`device ${device.name} takes part in rollout ${result.rolloutId}: wait for it to finish or abort it, then move the device`, Code.FailedPrecondition);
          case "name-taken":
            throw new ConnectError(`organization ${org.name} already has a device named ${device.name}: rename or remove it first`, Code.AlreadyExists);
        }
      }
      // The interceptor audits the call in the old organization; the new one records its arrival.
      await auditor.record({
        orgId: org.id,
        actor: principal.actor,
        action: "MoveDevice",
        target: device.id,
        source: hctx.values.get(remoteAddressKey),
        outcome: "ok",
        detail: `arrived from organization ${p.orgId} (moved by ${p.actor})`,
      });
      log.info("device moved", { device: device.id, name: device.name, from: p.orgId, to: org.id, by: p.actor });
      return { device: deviceToProto(result.device, Date.now(), ctx.offlineAfterMs), statement: "", endorsementRequired: oldRoot !== undefined };
    },
  };
}

/** The endorsement of the move that brought the device into `orgId`, or "" when it did not arrive by a move. */
export async function movedInto(store: Store, orgId: string, deviceId: string): Promise<string> {
  const move = await store.deviceMoves.getDeviceMove(deviceId);
  return move?.toOrg === orgId ? move.endorsement : "";
}
