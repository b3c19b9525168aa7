import { Code, ConnectError } from "@connectrpc/connect";
import { CoordinatorKeyMismatchError } from "@flotilla/protocol/agent";

/** Why the agent stopped. */
export type AgentExit = "stopped" | "decommissioned" | "rejected";

/** A failure the agent cannot recover from by retrying; the process exits non-zero. */
export class FatalAgentError extends Error {
  override name = "FatalAgentError";
}

/** Whether a failed call to the coordinator is worth retrying (network, coordinator busy), not a refusal. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof CoordinatorKeyMismatchError) return false;
  const ce = ConnectError.from(err);
  return [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Internal, Code.Canceled, Code.Aborted, Code.ResourceExhausted].includes(ce.code);
}

/** An error's message for a log line, without ConnectError's "[code]" prefix. */
export function describeError(err: unknown): string {
  return err instanceof ConnectError ? err.rawMessage : err instanceof Error ? err.message : String(err);
}
