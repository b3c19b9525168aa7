import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  agentv1,
  authenticateMessage,
  enrollMessage,
  hashSecret,
  newId,
  nodeId,
  splitJoinSecret,
  verifySignature,
} from "@flotilla/protocol";
import { deviceOf } from "../access/principal.ts";
import { openSession } from "../access/sessions.ts";
import type { ServiceContext } from "../context.ts";
import { desiredReleases, recordReleaseProgress } from "../releases/progress.ts";
import type { DeviceRow, EnrollResult } from "../store/index.ts";
import { factsToJson, lifecycleToProto } from "./convert.ts";
import { hello } from "./hello.ts";
import type { Hub } from "./hub.ts";
import { movedInto } from "./move.ts";

const MAX_ENTRIES = 1000;
const STREAM_NAME = /^[a-z0-9_-]{1,64}$/;

const refusals: Record<Extract<EnrollResult, { ok: false }>["reason"], string> = {
  "unknown-token": "join token unknown or its secret is wrong",
  revoked: "join token was revoked",
  expired: "join token has expired",
  "used-up": "join token has been used up",
  "key-enrolled": "this agent key is already enrolled",
};

/** A device name from a hostname: lowercase letters, digits and dashes. */
export function deviceNameFrom(hostname: string): string {
  const name = hostname.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 48);
  return name || "device";
}

function desiredOf(row: DeviceRow): agentv1.DesiredState {
  return create(agentv1.DesiredStateSchema, {
    deviceId: row.id,
    name: row.name,
    lifecycle: lifecycleToProto(row.lifecycle),
    labels: row.labels,
    generation: BigInt(row.generation),
  });
}

/** The AgentService: enrollment, device sessions, the desired-state stream and the outbox. */
export function agentService(ctx: ServiceContext, hub: Hub): ServiceImpl<typeof agentv1.AgentService> {
  const { store, challenges, log } = ctx;

  return {
    hello(req) {
      return { proof: hello(ctx, req.clientNonce) };
    },

    async enroll(req) {
      const parsed = splitJoinSecret(req.joinSecret);
      if (!parsed) throw new ConnectError("malformed join secret", Code.InvalidArgument);
      if (req.publicKey.length !== 32) throw new ConnectError("public_key must be 32 bytes", Code.InvalidArgument);
      if (!req.facts) throw new ConnectError("facts are required", Code.InvalidArgument);
      if (!verifySignature(req.publicKey, enrollMessage(req.challenge, req.joinSecret), req.signature)) {
        throw new ConnectError("enrollment signature does not verify", Code.Unauthenticated);
      }
      await challenges.consume(req.challenge);
      const token = await store.devices.getJoinToken(parsed.tokenId);
      if (!token || token.secretHash !== hashSecret(parsed.secret)) {
        throw new ConnectError(refusals["unknown-token"], Code.PermissionDenied);
      }
      const result = await store.devices.enrollDevice(
        token.id,
        {
          id: `dev_${newId(16)}`,
          publicKey: nodeId(req.publicKey),
          name: deviceNameFrom(req.facts.hostname),
          facts: factsToJson(req.facts),
          agentVersion: req.facts.agentVersion,
          capabilities: req.facts.capabilities,
        },
        Date.now(),
      );
      if (!result.ok) {
        const code = result.reason === "key-enrolled" ? Code.AlreadyExists : Code.PermissionDenied;
        throw new ConnectError(refusals[result.reason], code);
      }
      const d = result.device;
      log.info("device enrolled", { device: d.id, name: d.name, org: d.orgId, lifecycle: d.lifecycle });
      return { deviceId: d.id, name: d.name, lifecycle: lifecycleToProto(d.lifecycle), organizationId: d.orgId };
    },

    async authenticate(req) {
      if (!verifySignature(req.publicKey, authenticateMessage(req.challenge), req.signature)) {
        throw new ConnectError("signature does not verify", Code.Unauthenticated);
      }
      await challenges.consume(req.challenge);
      const device = await store.devices.findDeviceByPublicKey(nodeId(req.publicKey));
      if (!device) throw new ConnectError("this agent key is not enrolled", Code.Unauthenticated);
      const session = await openSession(
        store,
        { kind: "device", id: device.id, orgId: device.orgId },
        ctx.sessionTtlMs,
      );
      return {
        sessionToken: session.token,
        expiresAt: timestampFromMs(session.expiresAt),
        deviceId: device.id,
        name: device.name,
        lifecycle: lifecycleToProto(device.lifecycle),
      };
    },

    async *watch(req, hctx) {
      const { orgId, deviceId } = deviceOf(hctx);
      const sub = hub.subscribe(deviceId);
      hub.connectionDelta(deviceId, 1);
      try {
        const first = await store.devices.getDevice(orgId, deviceId);
        if (!first) return;
        if (req.agentVersion.length > 64 || req.capabilities.length > 64) {
          throw new ConnectError("agent version or capabilities too long", Code.InvalidArgument);
        }
        await store.devices.setConnection(orgId, deviceId, true, Date.now());
        ctx.rolloutEvents?.deviceConnected(orgId, deviceId);
        // Read once per stream: a move ends the stream (the old organization's session is gone).
        const moved = await movedInto(store, orgId, deviceId);
        let sent = -1;
        while (!hctx.signal.aborted) {
          const row = await store.devices.getDevice(orgId, deviceId);
          if (!row) return;
          if (row.generation !== sent) {
            sent = row.generation;
            const desired = desiredOf(row);
            desired.releases = await desiredReleases(store, row);
            desired.organizationId = orgId;
            desired.moveEndorsement = moved;
            yield { event: { case: "desired", value: desired } };
          }
          const r = await sub.wait(hctx.signal, ctx.keepaliveMs);
          if (r === "timeout") {
            await store.devices.setConnection(orgId, deviceId, true, Date.now());
            yield { event: { case: "keepalive", value: timestampNow() } };
          }
        }
      } finally {
        sub.close();
        if (hub.connectionDelta(deviceId, -1) === 0) {
          await store.devices.setConnection(orgId, deviceId, false, Date.now()).catch((err: unknown) => {
            log.warn("could not record disconnect", { device: deviceId, err: String(err) });
          });
        }
      }
    },

    async report(req, hctx) {
      const { orgId, deviceId } = deviceOf(hctx);
      if (req.entries.length > MAX_ENTRIES) {
        throw new ConnectError(`at most ${MAX_ENTRIES} entries per report`, Code.InvalidArgument);
      }
      for (const e of req.entries) {
        if (!STREAM_NAME.test(e.stream)) throw new ConnectError(`invalid stream name`, Code.InvalidArgument);
      }
      const device = await store.devices.getDevice(orgId, deviceId);
      if (!device) throw new ConnectError("device not found", Code.NotFound);
      if (device.lifecycle === "rejected" || device.lifecycle === "decommissioned") {
        throw new ConnectError(`device is ${device.lifecycle}`, Code.FailedPrecondition);
      }
      const acked = new Map<string, number>();
      for (const entry of req.entries) {
        const seq = Number(entry.seq);
        let last = acked.get(entry.stream);
        if (last === undefined) last = await store.devices.getAckedSeq(deviceId, entry.stream);
        if (seq > last) {
          if (seq > last + 1) {
            log.warn("outbox gap", { device: deviceId, stream: entry.stream, from: last + 1, to: seq - 1 });
          }
          await apply(ctx, orgId, deviceId, entry);
          await store.devices.setAckedSeq(deviceId, entry.stream, seq);
          last = seq;
        }
        acked.set(entry.stream, last);
      }
      return { acks: [...acked].map(([stream, seq]) => ({ stream, seq: BigInt(seq) })) };
    },
  };
}

async function apply(ctx: ServiceContext, orgId: string, deviceId: string, entry: agentv1.OutboxEntry) {
  const now = Date.now();
  switch (entry.body.case) {
    case "facts": {
      const facts = entry.body.value;
      await ctx.store.devices.recordFacts(
        orgId,
        deviceId,
        { facts: factsToJson(facts), agentVersion: facts.agentVersion, capabilities: facts.capabilities },
        now,
      );
      return;
    }
    case "status":
      await ctx.store.devices.setObservedGeneration(orgId, deviceId, Number(entry.body.value.observedGeneration));
      return;
    case "releaseProgress":
      if (!(await recordReleaseProgress(ctx.store, orgId, deviceId, entry, entry.body.value))) {
        ctx.log.warn("dropped invalid release progress", { device: deviceId, seq: Number(entry.seq) });
      } else {
        ctx.rolloutEvents?.releaseStep(orgId, deviceId, entry.body.value);
      }
      return;
    default:
      // An entry kind this coordinator does not know (a newer agent): acknowledged and ignored.
      return;
  }
}
