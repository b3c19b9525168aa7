import { create } from "@bufbuild/protobuf";
import { agentv1, commonv1, type Logger } from "@flotilla/protocol/agent";
import type { AgentExit } from "./exit.ts";
import type { StateDir } from "./state.ts";

/** What applying desired state acts on besides the state directory. */
export interface DesiredStateDeps {
  /** Hands the desired releases to the release manager. */
  setReleases(releases: agentv1.DesiredState["releases"]): void;
  /** Queues an outbox entry for the coordinator. */
  queue(stream: string, body: agentv1.OutboxEntry["body"]): Promise<void>;
  log: Logger;
}

/**
 * Applies the desired state the coordinator sends: hands its releases on, remembers it in the
 * state directory, and reports a status for each new generation.
 */
export class DesiredStateApplier {
  private constructor(
    private readonly state: StateDir,
    private readonly deps: DesiredStateDeps,
    private lastStatusGeneration: number,
  ) {}

  /** An applier that reports nothing for the generation the state directory says was applied last. */
  static async open(state: StateDir, deps: DesiredStateDeps): Promise<DesiredStateApplier> {
    return new DesiredStateApplier(state, deps, (await state.readApplied())?.generation ?? -1);
  }

  /** Applies desired state; returns an exit reason when the device was retired. */
  async apply(desired: agentv1.DesiredState): Promise<AgentExit | undefined> {
    const lifecycle = desired.lifecycle;
    if (lifecycle === commonv1.Lifecycle.DECOMMISSIONED || lifecycle === commonv1.Lifecycle.REJECTED) {
      return lifecycle === commonv1.Lifecycle.DECOMMISSIONED ? "decommissioned" : "rejected";
    }
    const generation = Number(desired.generation);
    this.deps.setReleases(desired.releases);
    await this.state.writeApplied({ generation, labels: desired.labels, lifecycle: commonv1.Lifecycle[lifecycle] ?? "" });
    if (generation !== this.lastStatusGeneration) {
      await this.deps.queue("status", { case: "status", value: create(agentv1.StatusSchema, { observedGeneration: desired.generation, labels: desired.labels }) });
      this.lastStatusGeneration = generation;
      this.deps.log.info("desired state applied", { generation, labels: JSON.stringify(desired.labels) });
    }
    return undefined;
  }
}
