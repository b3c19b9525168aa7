import { commonv1, factsFingerprint, sleep, type Logger } from "@flotilla/protocol/agent";
import { describeError } from "../exit.ts";
import type { StateDir } from "../state.ts";
import { collectFacts } from "./collect.ts";

/**
 * Collects the machine's facts every `intervalMs` and queues them for the coordinator when
 * they changed since the last queued ones (their fingerprint is kept in the state directory),
 * until `signal` aborts.
 */
export async function reportFacts(
  opts: {
    state: StateDir;
    /** The agent version reported. */
    version: string;
    intervalMs: number;
    capabilities(): string[];
    queue(facts: commonv1.Facts): Promise<void>;
    log: Logger;
  },
  signal: AbortSignal,
): Promise<void> {
  while (!signal.aborted) {
    try {
      const facts = await collectFacts({ agentVersion: opts.version, capabilities: opts.capabilities() });
      const sha = factsFingerprint(facts);
      if (sha !== (await opts.state.readFactsFingerprint())) {
        await opts.queue(facts);
        await opts.state.writeFactsFingerprint(sha);
        opts.log.info("facts changed; queued for the coordinator");
      }
    } catch (err) {
      opts.log.warn("could not collect facts", { err: describeError(err) });
    }
    await sleep(opts.intervalMs, signal);
  }
}
