/**
 * Rollout changes among replicas: what one replica's rollout engine committed wakes `rollout
 * watch` streams on every other at once, instead of at their next refresh. Each replica publishes
 * its engine's changes as a replica event ("rollout", `<orgId>/<rolloutId>`) and hands the
 * others' to `wake`. A missed event costs only the delay until the watcher's own refresh.
 * Wired in rollouts/index.ts: the engine's own commits go out (engine.onCommit), the others' come
 * in through engine.changed, which wakes watchers without publishing again.
 */
import type { Logger } from "@flotilla/protocol";
import type { ReplicaEvents } from "../store/index.ts";

const TOPIC = "rollout";

export function relayRolloutChanges(
  events: ReplicaEvents,
  replicaId: string,
  engine: { onChange(fn: (orgId: string, id: string) => void): () => void },
  wake: (orgId: string, id: string) => void,
  log?: Logger,
): () => void {
  const offLocal = engine.onChange((orgId, id) => {
    events.publish(TOPIC, `${replicaId}/${orgId}/${id}`).catch((err: unknown) => log?.warn("could not tell other replicas of a rollout change", { err: String(err) }));
  });
  const offRemote = events.subscribe(TOPIC, (payload) => {
    const [from, orgId, id] = payload.split("/");
    if (from && orgId && id && from !== replicaId) wake(orgId, id);
  });
  return () => {
    offLocal();
    offRemote();
  };
}
