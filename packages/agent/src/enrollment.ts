import { createHash } from "node:crypto";
import {
  commonv1,
  CoordinatorKeyMismatchError,
  enrollMessage,
  factsFingerprint,
  parseJoinString,
  sleep,
  VERSION,
  backoffDelay,
  type Identity,
  type Logger,
} from "@flotilla/protocol/agent";
import type { AgentConfig } from "./config.ts";
import { agentClient, greet } from "./connection/dial.ts";
import { describeError, FatalAgentError, isRetryable } from "./exit.ts";
import { collectFacts } from "./facts/index.ts";
import type { StateDir, Enrollment } from "./state.ts";
import { tunnelCapabilities } from "./tunnel/ports.ts";

/** What enrolling needs of the agent's configuration. */
export type EnrollOptions = Pick<AgentConfig, "join" | "tunnelPorts" | "backoffMinMs" | "backoffMaxMs"> & Partial<Pick<AgentConfig, "rejoin">>;

/**
 * The stored enrollment, or a new one made with the join string when there is none. Throws
 * FatalAgentError when the agent is not enrolled and has no join string, or enrolling fails
 * for good (see enroll).
 */
export async function loadOrEnroll(state: StateDir, identity: Identity, opts: EnrollOptions, log: Logger, signal: AbortSignal): Promise<Enrollment> {
  const enrollment = await state.readEnrollment();
  if (opts.rejoin) return await rejoin(opts.rejoin, enrollment, identity, state, opts, log, signal);
  if (!enrollment) {
    if (!opts.join) throw new FatalAgentError("this agent is not enrolled yet: start it with --join 'JOIN-STRING'");
    return await enroll(opts.join, identity, state, opts, log, signal);
  }
  if (opts.join) log.info("already enrolled; ignoring --join", { device: enrollment.deviceId });
  return enrollment;
}

/**
 * Enrolls with a join string: checks the coordinator's key, proves ours, sends our facts, and
 * stores the enrollment and the facts' fingerprint. Retries with backoff while the coordinator
 * is unreachable; throws FatalAgentError for a bad join string, a coordinator whose key does
 * not match it, a refusal, or `signal` aborting first.
 */
export async function enroll(
  joinText: string,
  identity: Identity,
  state: StateDir,
  opts: EnrollOptions,
  log: Logger,
  signal: AbortSignal,
  extra: Pick<Enrollment, "rejoinedWith"> = {},
): Promise<Enrollment> {
  let join;
  try {
    join = parseJoinString(joinText);
  } catch (err) {
    throw new FatalAgentError(describeError(err));
  }
  for (let attempt = 0; ; attempt++) {
    let close: (() => void) | undefined;
    try {
      // A join string naming several replicas: each attempt dials the next one.
      const urls = [join.url, ...(join.failoverUrls ?? [])];
      const opened = await agentClient(urls[attempt % urls.length]!, join.pin);
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
        ...(join.root ? { root: join.root } : {}),
        ...extra,
        ...(join.failoverUrls ? { failoverUrls: join.failoverUrls } : {}),
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
      if (!isRetryable(err)) throw new FatalAgentError(`enrollment refused: ${describeError(err)}`);
      const delay = backoffDelay(attempt, opts.backoffMinMs, opts.backoffMaxMs);
      log.warn("coordinator unreachable, retrying enrollment", { err: describeError(err), retryInMs: delay });
      await sleep(delay, signal);
    } finally {
      close?.();
    }
  }
}

/**
 * `--rejoin JOIN`: enrolls an agent that is already enrolled with a new join string (another
 * coordinator, or another organization), keeping its key and its installed releases. What
 * belonged to the old enrollment goes: the old organization's TUF metadata, the applied desired
 * state and the outbox queued for the old coordinator. Done once per join string: a restart with
 * the same --rejoin keeps the enrollment it made (docs/rejoin.md).
 */
async function rejoin(joinText: string, current: Enrollment | undefined, identity: Identity, state: StateDir, opts: EnrollOptions, log: Logger, signal: AbortSignal): Promise<Enrollment> {
  const digest = createHash("sha256").update(joinText).digest("hex");
  if (current?.rejoinedWith === digest) {
    log.info("already re-joined with this join string; ignoring --rejoin", { device: current.deviceId });
    return current;
  }
  // First: the old organization's metadata must not judge the new organization's releases.
  await state.forgetOrganization();
  const enrollment = await enroll(joinText, identity, state, opts, log, signal, { rejoinedWith: digest });
  log.info("re-joined: installed releases kept; trusting the new organization's root from now on", { device: enrollment.deviceId, coordinator: enrollment.url, from: current?.url ?? "" });
  return enrollment;
}
