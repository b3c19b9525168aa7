import { Code, ConnectError } from "@connectrpc/connect";
import { retryAfterMs } from "@flotilla/protocol/agent";

/** A mistake in how a command was called: exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A command's outcome that is not success, with its own exit code (e.g. a paused rollout). */
export class ExitError extends Error {
  override name = "ExitError";
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

/** Exit codes: 0 ok, 1 failure, 2 usage, 3 not authenticated, 4 not allowed, 5 not found, 6 unreachable. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return 2;
  if (err instanceof ExitError) return err.exitCode;
  if (err instanceof ConnectError) {
    switch (err.code) {
      case Code.InvalidArgument:
        return 2;
      case Code.Unauthenticated:
        return 3;
      case Code.PermissionDenied:
        return 4;
      case Code.NotFound:
        return 5;
      case Code.Unavailable:
        return 6;
      default:
        return 1;
    }
  }
  return 1;
}

/** One line for a person: what went wrong, without a stack trace. */
export function describeError(err: unknown, coordinator?: string): string {
  if (err instanceof ConnectError) {
    // The coordinator answered, but cannot serve now (its database is down, it sheds load).
    if (err.code === Code.Unavailable && retryAfterMs(err) !== undefined) return err.rawMessage;
    if (err.code === Code.Unavailable) {
      return `cannot reach the coordinator${coordinator ? ` at ${coordinator}` : ""}: ${err.rawMessage}`;
    }
    return err.rawMessage;
  }
  if (err instanceof Error) return err.message.split("\n").join("\n  ");
  return String(err);
}
