import { create, type MessageInitShape } from "@bufbuild/protobuf";
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
import { deviceOf, type DevicePrincipal } from "../access/principal.ts";
import { openSession } from "../access/sessions.ts";
import type { ServiceContext } from "../context.ts";
import { desiredReleases, recordReleaseProgress, toDesiredReleases } from "../releases/progress.ts";
import type { DeviceReport, DeviceRow, EnrollResult } from "../store/index.ts";
import { factsToJson, lifecycleToProto } from "./convert.ts";
import { hello } from "./hello.ts";
import type { Hub } from "./hub.ts";
import type { Presence } from "./presence.ts";
import type { DeviceStatusFeed } from "./status-feed.ts";
import { movedInto } from "./move.ts";

const MAX_ENTRIES = 1000;
/** A Watch stream reads its device again after this many quiet keep-alives (5 min at 15 s). */
const RECHECK_KEEPALIVES = 20;
const STREAM_NAME = /^[a-z0-9_-]{1,64}$/;

/**
 * The wait before a Watch stream's next keep-alive: `keepaliveMs` less up to a fifth, at random.
 * Streams opened together (a fleet reconnecting after a coordinator restart opens thousands in
 * seconds) would otherwise send their keep-alives in the same turn of the event loop, every
 * interval, for as long as they stay connected: at 7,000 devices, bursts that stall the
 * coordinator for seconds, long enough for agents' pings to time out and the fleet to reconnect
 * together again. With a random part each time, the bursts spread out within a few intervals,
 * and no keep-alive comes later than the agents expect.
 */
export function keepaliveWaitMs(keepaliveMs: number, random: () => number = Math.random): number {
  return Math.round(keepaliveMs * (1 - KEEPALIVE_JITTER * random()));
}

const KEEPALIVE_JITTER = 0.2;

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

/**
 * A device's Watch stream: its desired state at once and whenever it changes (the hub says when),
 * and a keep-alive when it has been quiet for a while. Served by Connect and, for agents, by the
 * lean device-stream route (server/device-streams.ts), which both call this.
 */
export function watchStream(ctx: ServiceContext, hub: Hub, presence: Presence) {
  const { store } = ctx;
  return async function* watch(device: DevicePrincipal, req: agentv1.WatchRequest, signal: AbortSignal): AsyncGenerator<MessageInitShape<typeof agentv1.WatchResponseSchema>> {
    const { orgId, deviceId } = device;
    if (req.agentVersion.length > 64 || req.capabilities.length > 64) {
      throw new ConnectError("agent version or capabilities too long", Code.InvalidArgument);
    }
    const sub = hub.subscribe(deviceId);
    presence.connect(orgId, deviceId);
    try {
      // Read once per stream: a move ends the stream (the old organization's session is gone).
      const moved = await movedInto(store, orgId, deviceId);
      let sent = -1;
      let look = true;
      let quiet = 0;
      while (!signal.aborted) {
        if (look) {
          // The hub hands most wake-ups their state, read for a whole batch of devices at once;
          // the first look, a periodic re-check and a wake-up without one read the store here.
          const snapshot = sub.take();
          const fresh = snapshot && snapshot.device.orgId === orgId && snapshot.device.generation >= sent ? snapshot : undefined;
          const row = fresh ? fresh.device : await store.devices.getDevice(orgId, deviceId);
          if (!row) return;
          if (row.generation !== sent) {
            sent = row.generation;
            const desired = desiredOf(row);
            desired.releases = fresh ? toDesiredReleases(fresh.releases) : await desiredReleases(store, row);
            desired.organizationId = orgId;
            desired.moveEndorsement = moved;
            yield { event: { case: "desired", value: desired } };
          }
        }
        const r = await sub.wait(signal, keepaliveWaitMs(ctx.keepaliveMs));
        // The hub says when to look again; a keep-alive reads nothing, but every
        // RECHECK_KEEPALIVES-th one looks anyway, in case a notification was lost (a
        // PostgreSQL listener reconnecting).
        quiet = r === "changed" ? 0 : quiet + 1;
        look = r === "changed" || quiet % RECHECK_KEEPALIVES === 0;
        if (r === "timeout") {
          presence.seen(orgId, deviceId);
          yield { event: { case: "keepalive", value: timestampNow() } };
        }
      }
    } finally {
      sub.close();
      presence.disconnect(orgId, deviceId);
    }
  };
}

/** The AgentService: enrollment, device sessions, the desired-state stream and the outbox. */
export function agentService(ctx: ServiceContext, hub: Hub, presence: Presence, status?: DeviceStatusFeed): ServiceImpl<typeof agentv1.AgentService> {
  const { store, challenges, log } = ctx;
  const watch = watchStream(ctx, hub, presence);

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
      status?.publish([{ orgId: d.orgId, id: d.id, name: d.name, lifecycle: d.lifecycle }]);
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

    watch: (req, hctx) => watch(deviceOf(hctx), req, hctx.signal),

    async report(req, hctx) {
      // The authorization interceptor read the device for this call: its lifecycle is current.
      const { orgId, deviceId, lifecycle } = deviceOf(hctx);
      if (req.entries.length > MAX_ENTRIES) {
        throw new ConnectError(`at most ${MAX_ENTRIES} entries per report`, Code.InvalidArgument);
      }
      for (const e of req.entries) {
        if (!STREAM_NAME.test(e.stream)) throw new ConnectError(`invalid stream name`, Code.InvalidArgument);
      }
      if (lifecycle === "rejected" || lifecycle === "decommissioned") {
        throw new ConnectError(`device is ${lifecycle}`, Code.FailedPrecondition);
      }
      const stored = req.entries.length > 0 ? await store.devices.getAckedSeqs(deviceId) : new Map<string, number>();
      const batch: Batch = { acked: new Map(), steps: [] };
      const acked = new Map<string, number>();
      for (const entry of req.entries) {
        const seq = Number(entry.seq);
        const last = acked.get(entry.stream) ?? stored.get(entry.stream) ?? 0;
        if (seq > last) {
          if (seq > last + 1) {
            log.warn("outbox gap", { device: deviceId, stream: entry.stream, from: last + 1, to: seq - 1 });
          }
          await apply(ctx, orgId, deviceId, entry, batch);
          batch.acked.set(entry.stream, seq);
          acked.set(entry.stream, seq);
        } else {
          acked.set(entry.stream, last);
        }
      }
      // Release steps are written as they come (each is idempotent by seq) and applied to the
      // device's rollout before the acks commit, with facts and observed generation, in one
      // transaction: a replica killed before that commit only has the agent send them again (to
      // any replica), and a step applied twice changes nothing. Acknowledged first, a step whose
      // transition the kill cut off would never reach the rollout, leaving the device in flight.
      for (const step of batch.steps) {
        try {
          await ctx.rolloutEvents?.releaseStep(orgId, deviceId, step);
        } catch (err) {
          log.warn("could not apply a release step to its rollout; the agent will send it again", { device: deviceId, err: String(err) });
          throw new ConnectError("could not apply the release step to its rollout; send it again", Code.Unavailable);
        }
      }
      await store.devices.recordReport(orgId, deviceId, batch, Date.now());
      return { acks: [...acked].map(([stream, seq]) => ({ stream, seq: BigInt(seq) })) };
    },
  };
}

/**
 * One report's changes: reported state and acks, written in one transaction, and the release
 * steps recorded, applied to their rollouts before that transaction.
 */
interface Batch extends DeviceReport {
  acked: Map<string, number>;
  steps: agentv1.ReleaseProgress[];
}

/** Applies one new outbox entry: reported state goes into `batch`, release steps to the store. */
async function apply(ctx: ServiceContext, orgId: string, deviceId: string, entry: agentv1.OutboxEntry, batch: Batch) {
  switch (entry.body.case) {
    case "facts": {
      const facts = entry.body.value;
      batch.facts = { facts: factsToJson(facts), agentVersion: facts.agentVersion, capabilities: facts.capabilities };
      return;
    }
    case "status":
      batch.observedGeneration = Number(entry.body.value.observedGeneration);
      return;
    case "releaseProgress":
      if (!(await recordReleaseProgress(ctx.store, orgId, deviceId, entry, entry.body.value))) {
        ctx.log.warn("dropped invalid release progress", { device: deviceId, seq: Number(entry.seq) });
      } else {
        batch.steps.push(entry.body.value);
      }
      return;
    default:
      // An entry kind this coordinator does not know (a newer agent): acknowledged and ignored.
      return;
  }
}
