import { describe, expect, it } from "vitest";
import { LocalEvents } from "../store/replicas/events.ts";
import { relayRolloutChanges } from "./rollout-relay.ts";

/** A stand-in for one replica's rollout engine: only its change listeners matter here. */
function engine() {
  const fns = new Set<(orgId: string, id: string) => void>();
  return {
    onChange(fn: (orgId: string, id: string) => void) {
      fns.add(fn);
      return () => void fns.delete(fn);
    },
    changed(orgId: string, id: string) {
      for (const fn of fns) fn(orgId, id);
    },
  };
}

describe("relayRolloutChanges", () => {
  it("wakes the other replicas for a rollout one replica changed, never itself, and nothing once stopped", async () => {
    const events = new LocalEvents();
    const [ea, eb] = [engine(), engine()];
    const woken: string[] = [];
    const offA = relayRolloutChanges(events, "a", ea, (o, id) => woken.push(`a:${o}/${id}`));
    const offB = relayRolloutChanges(events, "b", eb, (o, id) => woken.push(`b:${o}/${id}`));
    ea.changed("org1", "ro_1");
    eb.changed("org2", "ro_2");
    await Promise.resolve();
    expect(woken).toEqual(["b:org1/ro_1", "a:org2/ro_2"]);
    offB();
    ea.changed("org1", "ro_3");
    await Promise.resolve();
    expect(woken).toHaveLength(2);
    offA();
  });
});
