import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { backoffDelay, retryAfterMs } from "@flotilla/protocol/agent";

/**
 * Admin calls that may be sent again after a connection broke under them, because sending one
 * twice does what sending it once does: every read, and the writes that set a value (labels,
 * retention). A call that creates something (a rollout, a token, a key) or moves a state forward
 * is never sent twice: its first attempt may have landed, and the error says so.
 */
const RETRY_SAFE = /^(Get|List|Hello|WhoAmI|PlanRollout$|QueryLogs$|SummarizeDevices$|VerifyAuditLog$|UpdateDeviceLabels$|SetRetention$)/;

export interface RetryOptions {
  /** Attempts in all, the first included. */
  attempts?: number;
  baseMs?: number;
  maxMs?: number;
  /** Told before each new attempt (the CLI prints one line on stderr). */
  onRetry?: (method: string, err: ConnectError, delayMs: number) => void;
  random?: () => number;
}

/**
 * Whether `err` means the connection broke while the call was out (an HTTP/2 ping a busy
 * coordinator answered too late, a reset, a connection closed by a restart) rather than an
 * answer. A coordinator that answered "unavailable" with advice (its database is down) gave an
 * answer; so did one that refused the connection (nobody listens): both fail at once, in one line.
 */
export function brokenConnection(err: unknown): err is ConnectError {
  if (!(err instanceof ConnectError) || err.code !== Code.Unavailable) return false;
  if (retryAfterMs(err) !== undefined) return false;
  const cause = err.cause as { code?: unknown } | undefined;
  return !(cause && typeof cause === "object" && cause.code === "ECONNREFUSED");
}

/**
 * Sends retry-safe unary admin calls again, with jittered exponential backoff, when the
 * connection broke under them. A coordinator too busy to answer a ping in time (it is rolling out
 * to ten thousand devices) then costs the admin a wait, not a failed command.
 */
export function retryBrokenCalls(opts: RetryOptions = {}): Interceptor {
  const attempts = opts.attempts ?? 4;
  const baseMs = opts.baseMs ?? 1000;
  const maxMs = opts.maxMs ?? 8000;
  return (next) => async (req) => {
    if (req.stream || !RETRY_SAFE.test(req.method.name)) return next(req);
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (err) {
        if (attempt >= attempts || req.signal.aborted || !brokenConnection(err)) throw err;
        // Half the backoff at least, so a retry never follows the failure at once.
        const full = backoffDelay(attempt - 1, baseMs, maxMs, () => 1);
        const delay = Math.round(full / 2 + backoffDelay(attempt - 1, baseMs, maxMs, opts.random) / 2);
        opts.onRetry?.(req.method.name, err, delay);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  };
}
