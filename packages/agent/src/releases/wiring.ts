import { create } from "@bufbuild/protobuf";
import { join } from "node:path";
import { agentv1, Broadcast, type Logger } from "@flotilla/protocol/agent";
import type { ActivationEvents, Activator } from "../activation/activator.ts";
import type { CoordinatorHttp } from "./coordinator-http.ts";
import { ReleaseManager, type ReleaseStep } from "./release-manager.ts";

/** The capability an agent declares for a release kind it can activate. */
export function kindCapability(kind: string): string {
  return `release:${kind}`;
}

/** The outbox body of a release step. */
export function progressBody(s: ReleaseStep): agentv1.OutboxEntry["body"] {
  return {
    case: "releaseProgress",
    value: create(agentv1.ReleaseProgressSchema, {
      name: s.name,
      targetPath: s.targetPath,
      step: s.step,
      bytesDone: BigInt(s.bytesDone ?? 0),
      bytesTotal: BigInt(s.bytesTotal ?? 0),
      error: s.error ?? "",
      currentVersion: s.current?.version ?? "",
      currentCounter: BigInt(s.current?.counter ?? 0),
    }),
  };
}

/**
 * The agent's release side: keeps the activators that are available on this machine (one per
 * kind, the first wins), the capabilities they declare, and the release manager over them.
 */
export async function setupReleases(opts: {
  stateDir: string;
  /** The organization's root named by the join string, if any (Enrollment.root). */
  expectedRoot?: { version: number; sha256: string };
  activators: Activator[];
  connection(): CoordinatorHttp | undefined;
  /**
   * When the agent last heard from the coordinator (ms): a verified handshake or a message on
   * its Watch stream, keep-alives included; undefined while disconnected.
   */
  lastHeard(): number | undefined;
  queue(body: agentv1.OutboxEntry["body"]): Promise<void>;
  /** Where supervised processes' output lines go. */
  output?: ActivationEvents["output"];
  bytesPerSecond: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  log: Logger;
}): Promise<{ capabilities: string[]; manager: ReleaseManager; connectionChanged: Broadcast; heard: Broadcast; close(): Promise<void> }> {
  const usable: Activator[] = [];
  for (const a of opts.activators) {
    if (usable.some((u) => u.kind === a.kind)) continue;
    try {
      if (await a.available()) usable.push(a);
    } catch (err) {
      opts.log.warn("activator unavailable", { kind: a.kind, err: String(err) });
    }
  }
  const connectionChanged = new Broadcast();
  const heard = new Broadcast();
  const manager = new ReleaseManager({
    dir: join(opts.stateDir, "releases"),
    expectedRoot: opts.expectedRoot,
    activators: usable,
    connection: opts.connection,
    connectionChanged: (signal) => connectionChanged.wait(signal),
    report: (s) => opts.queue(progressBody(s)),
    async reachedCoordinator(sinceMs, signal) {
      for (;;) {
        const since = opts.lastHeard();
        if (since !== undefined && since >= sinceMs) return;
        if (signal.aborted) throw new Error("aborted while waiting for the coordinator");
        await Promise.race([connectionChanged.wait(signal), heard.wait(signal)]);
      }
    },
    output: opts.output,
    bytesPerSecond: opts.bytesPerSecond,
    backoffMinMs: opts.backoffMinMs,
    backoffMaxMs: opts.backoffMaxMs,
    log: opts.log.child({ component: "releases" }),
  });
  return {
    capabilities: usable.map((a) => kindCapability(a.kind)),
    manager,
    connectionChanged,
    heard,
    async close() {
      await Promise.allSettled(usable.map((a) => a.close()));
    },
  };
}
