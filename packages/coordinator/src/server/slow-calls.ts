/**
 * Slow calls, told in the log: an admin who waited 30 s for `rollout show` can see whether the
 * coordinator held the call that long or the time went elsewhere (a busy client machine, the
 * network). Unary calls only: a stream's length says nothing.
 *
 * The time runs from when the request reached Connect (its context was made, before the body
 * was read) to when the handler returned, and the part before the handler started (reading and
 * parsing the body, waiting behind other work on the event loop) is given apart. An overloaded
 * coordinator has thousands of slow calls a second, so they are summed: at most one line per
 * second, with the number of slow calls and the slowest of each method (the five slowest).
 */
import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "@flotilla/protocol";

/** A call slower than this is counted. */
export const SLOW_CALL_MS = 2000;
const WINDOW_MS = 1000;
const METHODS_PER_LINE = 5;

/** When the request reached Connect (performance.now()), set in the context values. */
export const arrivedAtKey = createContextKey<number | undefined>(undefined, { description: "when the request reached Connect" });

interface Slowest {
  calls: number;
  ms: number;
  beforeHandlerMs: number;
  code: string;
}

export class SlowCalls {
  private byMethod = new Map<string, Slowest>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly log: Logger,
    private readonly thresholdMs = SLOW_CALL_MS,
  ) {
    this.timer = setInterval(() => this.flush(), WINDOW_MS);
    this.timer.unref();
  }

  /** Records one finished call; `arrivedAt` and `startedAt` from performance.now(). */
  record(req: { service: { typeName: string }; method: { name: string } }, arrivedAt: number, startedAt: number, code: () => string): void {
    const ms = performance.now() - arrivedAt;
    if (ms < this.thresholdMs) return;
    // Named only when slow: nothing is allocated for the calls that are not.
    const method = `${req.service.typeName}/${req.method.name}`;
    const s = this.byMethod.get(method);
    if (!s) this.byMethod.set(method, { calls: 1, ms, beforeHandlerMs: startedAt - arrivedAt, code: code() });
    else {
      s.calls++;
      if (ms > s.ms) Object.assign(s, { ms, beforeHandlerMs: startedAt - arrivedAt, code: code() });
    }
  }

  private flush(): void {
    if (this.byMethod.size === 0) return;
    const all = [...this.byMethod].sort((a, b) => b[1].ms - a[1].ms);
    this.byMethod = new Map();
    this.log.warn("slow calls", {
      calls: all.reduce((n, [, s]) => n + s.calls, 0),
      slowest: all
        .slice(0, METHODS_PER_LINE)
        .map(([m, s]) => `${m.slice(m.lastIndexOf(".") + 1)} ${Math.round(s.ms)} ms (${Math.round(s.beforeHandlerMs)} ms before the handler, ${s.code}, ${s.calls} slow)`)
        .join("; "),
    });
  }

  /** The interceptor: outermost, so shedding, authorization and the handler all count. */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      if (req.stream) return next(req);
      const startedAt = performance.now();
      const arrivedAt = req.contextValues.get(arrivedAtKey) ?? startedAt;
      try {
        const res = await next(req);
        this.record(req, arrivedAt, startedAt, ok);
        return res;
      } catch (err) {
        this.record(req, arrivedAt, startedAt, () => codeOf(err));
        throw err;
      }
    };
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

const ok = () => "ok";

function codeOf(err: unknown): string {
  return Code[ConnectError.from(err).code].toLowerCase();
}
