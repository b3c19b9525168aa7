/**
 * Shedding load instead of falling over. A saturated coordinator keeps answering what keeps the
 * fleet healthy (open Watch streams and their keep-alives, Hello, every admin call) and tells
 * agents to come back later for the rest: enrollments, authentications (the gate of every
 * reconnect) and the bulk of reports, logs and metrics, which agents keep in their outboxes
 * anyway. "Later" is advice the agent honours (`retryAfterHeader`), spread with jitter and grown
 * with the overload (up to 5 s), so a busy coordinator is not met by a reconnect storm.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from "node:perf_hooks";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { agentv1, retryAfterHeader, type Logger } from "@flotilla/protocol";

/** The agent calls that may be shed; all else is always served. */
const SHEDDABLE = new Set([
  `/${agentv1.AgentService.typeName}/Enroll`,
  `/${agentv1.AgentService.typeName}/Authenticate`,
  `/${agentv1.AgentService.typeName}/Report`,
  `/${agentv1.TelemetryService.typeName}/ShipLogs`,
  `/${agentv1.TelemetryService.typeName}/ShipMetrics`,
]);

const RESOLUTION_MS = 20;
const MAX_ADVICE_MS = 5000;
const TICK_MS = 50;
const SAMPLE_MS = 1000;

export interface LoadShedderOptions {
  /** Sheddable calls served at once; more are shed. */
  maxCalls: number;
  /** Shed while the event loop's longest delay over the last second is above this, in ms. */
  maxLagMs: number;
  log: Logger;
  random?: () => number;
}

/**
 * The refusal of a shed call. It is made without a stack trace, which nobody reads: capturing one
 * costs about 14 µs of the 17 µs an error takes to make (measured in Node 20), paid on every call
 * an overloaded coordinator sheds, by the process that can least afford it.
 */
function busy(adviceMs: number): ConnectError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new ConnectError("the coordinator is busy; try again later", Code.Unavailable, { [retryAfterHeader]: String(adviceMs) });
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export class LoadShedder {
  private inflight = 0;
  private lagMs = 0;
  /** Calls shed since start, for /metrics and tests. */
  shed = 0;
  private shedSinceLog = 0;
  private readonly histogram: IntervalHistogram;
  private readonly timer: NodeJS.Timeout;
  private readonly ticker: NodeJS.Timeout;
  /** When the event loop last ran its timers. */
  private lastTick = Date.now();
  private lastSampleAt = Date.now();
  private readonly random: () => number;

  constructor(private readonly opts: LoadShedderOptions) {
    this.random = opts.random ?? Math.random;
    this.histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.histogram.enable();
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref();
    this.ticker = setInterval(() => (this.lastTick = Date.now()), TICK_MS);
    this.ticker.unref();
  }

  private sample(): void {
    // The histogram records each tick's whole interval; the lag is what exceeds the resolution.
    // The longest, not a percentile: one stall of seconds among fifty ticks is the overload.
    // This timer's own lateness counts too: after a stall it may fire before the histogram's.
    const now = Date.now();
    const late = now - this.lastSampleAt - SAMPLE_MS;
    this.lastSampleAt = now;
    this.lagMs = Math.max(0, this.histogram.max / 1e6 - RESOLUTION_MS, late);
    this.histogram.reset();
    if (this.shedSinceLog > 0) {
      this.opts.log.warn("shedding load: agents told to retry later", { shed: this.shedSinceLog, inflight: this.inflight, lagMs: Math.round(this.lagMs) });
      this.shedSinceLog = 0;
    }
  }

  /** How overloaded the coordinator is: 0 when it is not, growing with the excess. */
  private overload(): number {
    const calls = this.inflight / this.opts.maxCalls;
    // The last second's longest lag, or the lag right now: after a stall, the calls that piled up
    // are served before the timers run again, and must see that the loop was stuck.
    const lag = Math.max(this.lagMs, Date.now() - this.lastTick - TICK_MS) / this.opts.maxLagMs;
    return Math.max(calls, lag) >= 1 ? Math.max(calls, lag) : 0;
  }

  /**
   * The wait to advise: 1 s at the threshold, more as the overload grows, jittered ±50 %. At most
   * 5 s: a past stall (a 30 s pause shows as 30 s of lag once) says little about the next
   * seconds, and agents told again spread out further each time.
   */
  private advice(overload: number): number {
    const base = Math.min(MAX_ADVICE_MS, 1000 * overload);
    return Math.round(base * (0.5 + this.random()));
  }

  interceptor(): Interceptor {
    return (next) => async (req) => {
      if (!SHEDDABLE.has(`/${req.service.typeName}/${req.method.name}`)) return next(req);
      const overload = this.overload();
      if (overload > 0) {
        this.shed++;
        this.shedSinceLog++;
        throw busy(this.advice(overload));
      }
      this.inflight++;
      try {
        return await next(req);
      } finally {
        this.inflight--;
      }
    };
  }

  close(): void {
    clearInterval(this.timer);
    clearInterval(this.ticker);
    this.histogram.disable();
  }
}
