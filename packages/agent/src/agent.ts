import { mkdir } from "node:fs/promises";
import { loadOrCreateIdentity, onAbort, VERSION, type Logger } from "@flotilla/protocol/agent";
import type { Activator } from "./activation/activator.ts";
import { nixosActivators } from "./activation/nixos/index.ts";
import type { AgentConfig } from "./config.ts";
import { ConnectionHolder } from "./connection/connection-holder.ts";
import { connect } from "./connection/dial.ts";
import { DesiredStateApplier } from "./desired-state.ts";
import { loadOrEnroll } from "./enrollment.ts";
import { followMove } from "./move.ts";
import type { AgentExit } from "./exit.ts";
import { reportFacts } from "./facts/index.ts";
import { OutboxSender } from "./outbox/outbox-sender.ts";
import { Outbox } from "./outbox/outbox.ts";
import { setupReleases } from "./releases/wiring.ts";
import { StateDir } from "./state.ts";
import { AgentTelemetry } from "./telemetry/agent-telemetry.ts";
import { tunnelCapabilities } from "./tunnel/ports.ts";
import { serveTunnels } from "./tunnel/tunnels.ts";

/**
 * Everything an agent needs to run: its configuration (config.ts documents each option) and
 * what only a program can pass.
 */
export type AgentOptions = AgentConfig & {
  /** Activators for release kinds (bundle, nixos, ...); those available() here are declared as capabilities. */
  activators?: Activator[];
  /** The version the agent reports (facts, Watch); default VERSION. */
  version?: string;
};

/**
 * Runs an agent until it is stopped (`signal`), decommissioned or rejected. Enrolls first when
 * the state directory holds no enrollment. Throws FatalAgentError for what retrying cannot fix.
 */
export async function runAgent(opts: AgentOptions, baseLog: Logger, signal: AbortSignal): Promise<AgentExit> {
  await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  const telemetry = await AgentTelemetry.open(opts, baseLog);
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
  const enrollment = await loadOrEnroll(state, identity, opts, log, signal);
  const outbox = await Outbox.open(state.outboxDir);
  const stop = new AbortController();
  // A stop asked for while the agent enrolled or started counts too.
  const unlisten = onAbort(signal, () => stop.abort());

  const sender = new OutboxSender(outbox, { retryMs: opts.backoffMaxMs }, log);
  const holder = new ConnectionHolder({
    ...opts,
    enrollment,
    dial: (url, pin, s) => connect(url, pin, identity, s),
    // Only the pin changes here (a key rotation); the organization may have changed since (a move).
    saveEnrollment: async (e) => {
      const stored = await state.readEnrollment();
      await state.writeEnrollment(stored ? { ...stored, pin: e.pin } : e);
    },
    watchRequest: () => ({ agentVersion: opts.version ?? VERSION, capabilities: capabilities() }),
    onDesired: async (desired) => {
      const move = await followMove(state, desired, log);
      if (move === "refused") return undefined;
      if (move) {
        // In place: what runs keeps running; from now on releases verify under the new root.
        enrollment.orgId = move.orgId;
        enrollment.root = move.root;
        releases.manager.trustRoot(move.root);
      }
      return applier.apply(desired);
    },
    log,
  });
  const token = () => holder.current?.conn.session.sessionToken;
  const releases = await setupReleases({
    stateDir: opts.stateDir,
    expectedRoot: enrollment.root,
    activators: [...(opts.activators ?? []), ...(await nixosActivators(opts, enrollment, () => token() ?? "", log))],
    // The enrollment as loaded: a key rotation re-pins the holder's copy, not this one.
    connection: () => holder.current && { url: holder.current.url, pin: enrollment.pin, token: token() ?? "", onUnauthorized: () => holder.reconnect() },
    lastHeard: () => holder.lastHeardAt,
    queue: (body) => sender.queue("release", body),
    // Supervised processes' stdout and stderr go to the durable log buffer, unit = release name.
    output: (unit, stream, line) => telemetry.capture.append(unit, stream, line),
    bytesPerSecond: opts.downloadBytesPerSecond,
    backoffMinMs: opts.backoffMinMs,
    backoffMaxMs: opts.backoffMaxMs,
    log,
  });
  const capabilities = () => [...releases.capabilities, ...tunnelCapabilities(opts.tunnelPorts)];
  const applier = await DesiredStateApplier.open(state, {
    setReleases: (desired) => releases.manager.setDesired(desired),
    queue: (stream, body) => sender.queue(stream, body),
    log,
  });
  holder.onChange((live) => sender.connect(live?.conn.client, live?.drop));
  holder.onChange((live) => telemetry.connect(live?.conn.transport, live?.drop));
  holder.onChange((live) => {
    if (live) void serveTunnels(live.conn.transport, { ports: opts.tunnelPorts, sessionToken: live.conn.session.sessionToken }, log, live.signal);
  });
  holder.onChange(() => releases.connectionChanged.notify());
  holder.onHeard(() => releases.heard.notify());

  log.info("agent running", { device: enrollment.deviceId, name: enrollment.name, coordinator: enrollment.url });
  telemetry.start();
  const background = [
    sender.run(stop.signal),
    reportFacts({ state, version: opts.version ?? VERSION, intervalMs: opts.factsIntervalMs, capabilities, queue: (facts) => sender.queue("facts", { case: "facts", value: facts }), log }, stop.signal),
    releases.manager.run(stop.signal),
  ];
  let exit: AgentExit;
  try {
    exit = await holder.run(stop.signal);
  } finally {
    stop.abort();
    unlisten();
    sender.close();
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
