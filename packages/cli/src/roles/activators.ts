import { join } from "node:path";
import type { Activator, LauncherLink } from "@flotilla/agent";
import type { Logger } from "@flotilla/protocol/agent";

/**
 * The activators `flotilla agent` runs with, one per release kind. Each is declared as a
 * capability when its available() is true on this machine; the coordinator deploys only kinds
 * a device declares. One line per activator; loaded lazily with the agent's code.
 */
export async function agentActivators(stateDir: string, log: Logger, self?: { link: LauncherLink; version: string }): Promise<Activator[]> {
  const { AgentActivator, BundleActivator } = await import("@flotilla/agent");
  return [
    new BundleActivator({ dir: join(stateDir, "bundles"), log: log.child({ activator: "bundle" }) }),
    // Only under a launcher (`self_update = true`), which restores the previous agent when a new one fails.
    ...(self ? [new AgentActivator({ stateDir, link: self.link, version: self.version, log: log.child({ activator: "agent" }) })] : []),
  ];
}
