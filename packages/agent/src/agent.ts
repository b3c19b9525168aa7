import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { mkdir } from "node:fs/promises";
import {
  agentv1,
  backoffDelay,
  commonv1,
  CoordinatorKeyMismatchError,
  enrollMessage,
  factsFingerprint,
  loadOrCreateIdentity,
  parseJoinString,
  sleep,
  VERSION,
  Wakeup,
  type Identity,
  type Logger,
} from "@flotilla/protocol";
import { agentClient, connect, greet, type Connection } from "./connection.ts";
import { collectFacts } from "./facts/index.ts";
import { AgentTelemetry } from "./telemetry/agent-telemetry.ts";
import { Outbox } from "./outbox/outbox.ts";
import type { Activator } from "./activation/activator.ts";
import { nixosActivators } from "./activation/nixos/index.ts";
import { setupReleases } from "./releases/wiring.ts";
import { StateDir, type Enrollment } from "./state.ts";
import { tunnelCapabilities } from "./tunnel/ports.ts";
import { serveTunnels } from "./tunnel/tunnels.ts";

/** Everything an agent needs to run; see config.ts for each option's meaning. */
export interface AgentOptions {
  stateDir: string;
  /** A join string, needed only until the agent is enrolled. */
  join?: string;
  factsIntervalMs: number;
  /** Reconnect when the coordinator has said nothing (not even a keep-alive) for this long. */
  watchTimeoutMs: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  /** Logs and metrics (logs/telemetry.ts); defaults as in config.ts. */
  logBufferBytes?: number;
  metricsIntervalMs?: number;
  journalUnits?: string[];
  logFileUnit?: string[];
  /** Local TCP ports admins may reach through tunnels; the coordinator cannot change them. */
  tunnelPorts: number[];
  /** The NixOS system profile nixos releases switch; unset: no nixos activator. */
  nixosProfile?: string;
  /** After a NixOS switch, how long the agent has to reach the coordinator again. */
  nixosSwitchTimeoutMs?: number;
  /** Activators for release kinds (bundle, nixos, ...); those available() here are declared as capabilities. */
  activators?: Activator[];
  /** Caps release downloads (bytes per second); 0 or unset for no cap. */
  downloadBytesPerSecond?: number;
}

/** Why the agent stopped. */
export type AgentExit = "stopped" | "decommissioned" | "rejected";

/** A failure the agent cannot recover from by retrying; the process exits non-zero. */
export class FatalAgentError extends Error {
  override name = "FatalAgentError";
}

const BATCH_RECORDS = 500;
const BATCH_BYTES = 1024 * 1024;

function isRetryable(err: unknown): boolean {
  if (err instanceof CoordinatorKeyMismatchError) return false;
  const ce = ConnectError.from(err);
  return [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Internal, Code.Canceled, Code.Aborted, Code.ResourceExhausted].includes(ce.code);
}

function describe(err: unknown): string {
  return err instanceof ConnectError ? err.rawMessage : err instanceof Error ? err.message : String(err);
}

/** Enrolls with a join string: checks the coordinator's key, proves ours, sends our facts. */
async function enroll(
  joinText: string,
  identity: Identity,
  state: StateDir,
  opts: AgentOptions,
  log: Logger,
  signal: AbortSignal,
): Promise<Enrollment> {
  let join;
  try {
    join = parseJoinString(joinText);
  } catch (err) {
    throw new FatalAgentError(describe(err));
  }
  for (let attempt = 0; ; attempt++) {
    let close: (() => void) | undefined;
    try {
      const opened = await agentClient(join.url, join.pin);
      close = opened.close;
      const client = opened.client;
      let pin = join.pin;
      const challenge = await greet(client, join.pin, signal, { presentedPin: opened.presentedPin, onRotated: (p) => (pin = p) });
      const facts = await collectFacts({ agentVersion: VERSION, capabilities: tunnelCapabilities(opts.tunnelPorts) });
      const res = await client.enroll(
        {
          joinSecret: join.secret,
          publicKey: identity.publicKey,
          challenge,
          signature: identity.sign(enrollMessage(challenge, join.secret)),
          facts,
        },
        { signal, timeoutMs: 30_000 },
      );
      const enrollment: Enrollment = {
        url: join.url,
        pin,
        deviceId: res.deviceId,
        name: res.name,
        orgId: res.organizationId,
        enrolledAt: Date.now(),
      };
      await state.writeEnrollment(enrollment);
      await state.writeFactsFingerprint(factsFingerprint(facts));
      log.info("enrolled", { device: res.deviceId, name: res.name, lifecycle: commonv1.Lifecycle[res.lifecycle] });
      return enrollment;
    } catch (err) {
      if (signal.aborted) throw new FatalAgentError("stopped before enrollment finished");
      if (err instanceof CoordinatorKeyMismatchError) {
        throw new FatalAgentError(`refusing to enroll: ${err.message}. The join string does not belong to this coordinator.`);
      }
      if (!isRetryable(err)) throw new FatalAgentError(`enrollment refused: ${describe(err)}`);
      const delay = backoffDelay(attempt, opts.backoffMinMs, opts.backoffMaxMs);
      log.warn("coordinator unreachable, retrying enrollment", { err: describe(err), retryInMs: delay });
      await sleep(delay, signal);
    } finally {
      close?.();
    }
  }
}

/**
 * Runs an agent until it is stopped (`signal`), decommissioned or rejected. Enrolls first when
 * the state directory holds no enrollment. Throws FatalAgentError for what retrying cannot fix.
 */
export async function runAgent(opts: AgentOptions, baseLog: Logger, signal: AbortSignal): Promise<AgentExit> {
  await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  const telemetry = await AgentTelemetry.open(
    {
      stateDir: opts.stateDir,
      logBufferBytes: opts.logBufferBytes ?? 256 << 20,
      metricsIntervalMs: opts.metricsIntervalMs ?? 10_000,
      journalUnits: opts.journalUnits ?? [],
      logFileUnits: opts.logFileUnit ?? [],
      backoffMinMs: opts.backoffMinMs,
      backoffMaxMs: opts.backoffMaxMs,
    },
    baseLog,
  );
  const log = telemetry.logger(baseLog);
  try {
    return await runEnrolledAgent(opts, log, signal, telemetry);
  } finally {
    await telemetry.close();
  }
}

async function runEnrolledAgent(opts: AgentOptions, log: Logger, signal: AbortSignal, telemetry: AgentTelemetry): Promise<AgentExit> {
  const state = new StateDir(opts.stateDir);
  const identity = await loadOrCreateIdentity(state.keyPath);
  let enrollment = await state.readEnrollment();
  if (!enrollment) {
    if (!opts.join) throw new FatalAgentError("this agent is not enrolled yet: start it with --join 'JOIN-STRING'");
    enrollment = await enroll(opts.join, identity, state, opts, log, signal);
  } else if (opts.join) {
    log.info("already enrolled; ignoring --join", { device: enrollment.deviceId });
  }
  const outbox = await Outbox.open(state.outboxDir);
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  signal.addEventListener("abort", onAbort);

  let current: Connection | undefined;
  /** Drops the current connection so the watch loop opens a new session (one expired). */
  let reconnect: (() => void) | undefined;
  const connectionChanged = new Wakeup();
  const outboxChanged = new Wakeup();
  const offAppend = outbox.onAppend(() => outboxChanged.notify());
  let lastStatusGeneration = (await state.readApplied())?.generation ?? -1;
  let lastHeardAt: number | undefined;
  const releases = await setupReleases({
    stateDir: opts.stateDir,
    activators: [...(opts.activators ?? []), ...(await nixosActivators(opts, enrollment, () => current?.session.sessionToken ?? "", log))],
    connection: () => current && { url: enrollment.url, pin: enrollment.pin, token: current.session.sessionToken, onUnauthorized: () => reconnect?.() },
    lastHeard: () => (current ? lastHeardAt : undefined),
    queue: (body) => queue("release", body),
    // Supervised processes' stdout and stderr go to the durable log buffer, unit = release name.
    output: (unit, stream, line) => telemetry.capture.append(unit, stream, line),
    bytesPerSecond: opts.downloadBytesPerSecond ?? 0,
    backoffMinMs: opts.backoffMinMs,
    backoffMaxMs: opts.backoffMaxMs,
    log,
  });

  async function sendLoop(): Promise<void> {
    while (!stop.signal.aborted) {
      const conn = current;
      if (!conn) {
        await connectionChanged.wait(stop.signal);
        continue;
      }
      const batch = await outbox.pending(BATCH_RECORDS, BATCH_BYTES);
      if (batch.length === 0) {
        await Promise.race([outboxChanged.wait(stop.signal), connectionChanged.wait(stop.signal)]);
        continue;
      }
      try {
        const entries = batch.map((r) => {
          const e = fromBinary(agentv1.OutboxEntrySchema, r.body);
          e.stream = r.stream;
          e.seq = BigInt(r.seq);
          e.time = timestampFromMs(r.time);
          return e;
        });
        const res = await conn.client.report({ entries }, { signal: stop.signal, timeoutMs: 30_000 });
        for (const ack of res.acks) await outbox.ack(ack.stream, Number(ack.seq));
      } catch (err) {
        if (stop.signal.aborted) return;
        log.warn("could not deliver outbox", { err: describe(err), pending: outbox.size() });
        // Sessions expire (--session-ttl-ms on the coordinator); a new connection authenticates anew.
        if (ConnectError.from(err).code === Code.Unauthenticated) reconnect?.();
        await connectionChanged.wait(stop.signal, opts.backoffMaxMs);
      }
    }
  }

  async function queue(stream: string, body: agentv1.OutboxEntry["body"]): Promise<void> {
    await outbox.append(stream, toBinary(agentv1.OutboxEntrySchema, create(agentv1.OutboxEntrySchema, { body })));
  }

  async function factsLoop(): Promise<void> {
    while (!stop.signal.aborted) {
      try {
        const facts = await collectFacts({ agentVersion: VERSION, capabilities: [...releases.capabilities, ...tunnelCapabilities(opts.tunnelPorts)] });
        const sha = factsFingerprint(facts);
        if (sha !== (await state.readFactsFingerprint())) {
          await queue("facts", { case: "facts", value: facts });
          await state.writeFactsFingerprint(sha);
          log.info("facts changed; queued for the coordinator");
        }
      } catch (err) {
        log.warn("could not collect facts", { err: describe(err) });
      }
      await sleep(opts.factsIntervalMs, stop.signal);
    }
  }

  /** Applies desired state; returns an exit reason when the device was retired. */
  async function apply(desired: agentv1.DesiredState): Promise<AgentExit | undefined> {
    const lifecycle = desired.lifecycle;
    if (lifecycle === commonv1.Lifecycle.DECOMMISSIONED || lifecycle === commonv1.Lifecycle.REJECTED) {
      return lifecycle === commonv1.Lifecycle.DECOMMISSIONED ? "decommissioned" : "rejected";
    }
    const generation = Number(desired.generation);
    releases.manager.setDesired(desired.releases);
    await state.writeApplied({ generation, labels: desired.labels, lifecycle: commonv1.Lifecycle[lifecycle] ?? "" });
    if (generation !== lastStatusGeneration) {
      await queue("status", { case: "status", value: create(agentv1.StatusSchema, { observedGeneration: desired.generation, labels: desired.labels }) });
      lastStatusGeneration = generation;
      log.info("desired state applied", { generation, labels: JSON.stringify(desired.labels) });
    }
    return undefined;
  }

  async function watchLoop(e: Enrollment): Promise<AgentExit> {
    for (let attempt = 0; !stop.signal.aborted; attempt++) {
      const streamAbort = new AbortController();
      const abortStream = () => streamAbort.abort();
      stop.signal.addEventListener("abort", abortStream);
      let silence: NodeJS.Timeout | undefined;
      const heard = () => {
        clearTimeout(silence);
        silence = setTimeout(abortStream, opts.watchTimeoutMs);
        if (current) {
          // A NixOS switch confirms once the coordinator is heard from after it (reachedCoordinator).
          lastHeardAt = Date.now();
          releases.heard.notify();
        }
      };
      let conn: Connection | undefined;
      try {
        conn = await connect(e.url, e.pin, identity, streamAbort.signal);
        if (conn.rotatedPin) {
          log.info("coordinator key rotated; following its endorsement and re-pinning", { from: e.pin, to: conn.rotatedPin });
          e = { ...e, pin: conn.rotatedPin };
          await state.writeEnrollment(e);
        }
        heard();
        const stream = conn.client.watch({ agentVersion: VERSION, capabilities: [...releases.capabilities, ...tunnelCapabilities(opts.tunnelPorts)] }, { signal: streamAbort.signal });
        current = conn;
        reconnect = abortStream;
        lastHeardAt = Date.now();
        connectionChanged.notify();
        telemetry.connect(conn.transport, abortStream);
        void serveTunnels(conn.transport, { ports: opts.tunnelPorts }, log, streamAbort.signal);
        releases.connectionChanged.notify();
        for await (const msg of stream) {
          heard();
          if (msg.event.case === "desired") {
            attempt = 0;
            const exit = await apply(msg.event.value);
            if (exit) return exit;
          }
        }
        log.warn("coordinator closed the watch stream; reconnecting");
      } catch (err) {
        if (stop.signal.aborted) break;
        if (err instanceof CoordinatorKeyMismatchError) log.error("coordinator key check failed", { err: err.message });
        else log.warn("connection to coordinator lost", { err: describe(err) });
      } finally {
        streamAbort.abort(); // ends what runs on this connection (tunnels) with it
        clearTimeout(silence);
        stop.signal.removeEventListener("abort", abortStream);
        current = undefined;
        reconnect = undefined;
        connectionChanged.notify();
        telemetry.connect(undefined);
        releases.connectionChanged.notify();
        conn?.close();
      }
      await sleep(backoffDelay(attempt, opts.backoffMinMs, opts.backoffMaxMs), stop.signal);
    }
    return "stopped";
  }

  log.info("agent running", { device: enrollment.deviceId, name: enrollment.name, coordinator: enrollment.url });
  telemetry.start();
  const background = [sendLoop(), factsLoop(), releases.manager.run(stop.signal)];
  let exit: AgentExit;
  try {
    exit = await watchLoop(enrollment);
  } finally {
    stop.abort();
    signal.removeEventListener("abort", onAbort);
    offAppend();
    await Promise.allSettled(background);
    await releases.close();
    await outbox.close();
  }
  if (exit !== "stopped") {
    await state.forget();
    log.warn(exit === "decommissioned" ? "device decommissioned: credentials forgotten, stopping" : "enrollment rejected by an admin: credentials forgotten, stopping");
  }
  return exit;
}
