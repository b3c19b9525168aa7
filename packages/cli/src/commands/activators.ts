import type { Activator } from "@flotilla/agent";

/**
 * The activators `flotilla agent` runs with, one per release kind. Each is constructed here and
 * declared as a capability when its available() is true on this machine; the coordinator deploys
 * only kinds a device declares. Loaded lazily with the agent's code.
 */
export async function agentActivators(stateDir: string): Promise<Activator[]> {
  const activators: Activator[] = [];
  // Plug-in point: one line per activator, e.g.
  //   activators.push(new BundleActivator({ dir: join(stateDir, "bundle") }));
  void stateDir;
  return Promise.resolve(activators);
}
