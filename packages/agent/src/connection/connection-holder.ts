import type { MessageInitShape } from "@bufbuild/protobuf";
import { agentv1, CoordinatorKeyMismatchError, retryDelay, sleep, type Logger } from "@flotilla/protocol/agent";
import type { AgentConfig } from "../config.ts";
import { describeError, type AgentExit } from "../exit.ts";
import type { Enrollment } from "../state.ts";
import type { Connection } from "./dial.ts";

/** The connection the agent holds now: its session and HTTP/2 connection, while its Watch stream is open. */
export interface LiveConnection {
  readonly conn: Connection;
  /** The coordinator address it dialled: the enrollment's, or one of its failover addresses. */
  readonly url: string;
  /** Aborts when this connection ends; what runs on it (tunnels) stops with it. */
  readonly signal: AbortSignal;
  /** Drops this connection (a refused, expired session); the holder opens a new one. */
  drop(): void;
}

export interface ConnectionHolderOptions extends Pick<AgentConfig, "watchTimeoutMs" | "backoffMinMs" | "backoffMaxMs"> {
  enrollment: Enrollment;
  /** Opens an authenticated connection (dial.ts `connect`); the network boundary. */
  dial(url: string, pin: string, signal: AbortSignal): Promise<Connection>;
  /** Stores the enrollment after the coordinator's key was rotated and the agent re-pinned. */
  saveEnrollment(e: Enrollment): Promise<void>;
  /** What the agent declares on each Watch: its version and capabilities. */
  watchRequest(): MessageInitShape<typeof agentv1.WatchRequestSchema>;
  /** Applies desired state from the Watch stream; an exit reason ends run(). */
  onDesired(desired: agentv1.DesiredState): Promise<AgentExit | undefined>;
  log: Logger;
  /** Waits between attempts; sleep() unless a test observes the delays. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Jitter source for the backoff, in [0, 1); Math.random unless a test fixes it. */
  random?: () => number;
}

/**
 * Holds the agent's connection to the coordinator: authenticates, opens the Watch stream and
 * hands its desired state on, and reconnects when the stream ends, fails, or the coordinator
 * is silent (not even a keep-alive) for `watchTimeoutMs`. Between attempts it backs off with
 * full jitter, growing per failure and starting over once desired state arrived again.
 * Listeners hear of each connection as it opens and closes.
 *
 * An enrollment with failover addresses (other replicas of the coordinator, from the join
 * string) is dialled in turn: each ended or failed connection moves on to the next address, and
 * the backoff grows once per round over all of them, so a replica that dies is replaced by the
 * next one after a short jittered wait.
 */
export class ConnectionHolder {
  private live: LiveConnection | undefined;
  private heardAt: number | undefined;
  private readonly changeListeners: ((live: LiveConnection | undefined) => void)[] = [];
  private readonly heardListeners: (() => void)[] = [];

  constructor(private readonly opts: ConnectionHolderOptions) {}

  /** The open connection, or undefined while (re)connecting. */
  get current(): LiveConnection | undefined {
    return this.live;
  }

  /**
   * When the coordinator was last heard from (ms): the connection opening or any message on the
   * Watch stream, keep-alives included; undefined while disconnected.
   */
  get lastHeardAt(): number | undefined {
    return this.live ? this.heardAt : undefined;
  }

  /** Calls `listener` with each new connection, and with undefined when it ends; in the order added. */
  onChange(listener: (live: LiveConnection | undefined) => void): void {
    this.changeListeners.push(listener);
  }

  /** Calls `listener` whenever a message arrives on the open connection's Watch stream. */
  onHeard(listener: () => void): void {
    this.heardListeners.push(listener);
  }

  /** Drops the current connection, if any, so a new session is opened. */
  reconnect(): void {
    this.live?.drop();
  }

  /** Connects and reconnects until `signal` aborts ("stopped") or desired state retires the device. */
  async run(signal: AbortSignal): Promise<AgentExit> {
    const { log } = this.opts;
    const wait = this.opts.sleep ?? sleep;
    let e = this.opts.enrollment;
    const urls = [e.url, ...(e.failoverUrls ?? []).filter((u) => u !== e.url)];
    let next = 0;
    for (let attempt = 0; !signal.aborted; attempt++) {
      const url = urls[next++ % urls.length]!;
      const streamAbort = new AbortController();
      const abortStream = () => streamAbort.abort();
      signal.addEventListener("abort", abortStream);
      let silence: NodeJS.Timeout | undefined;
      const heard = () => {
        clearTimeout(silence);
        silence = setTimeout(abortStream, this.opts.watchTimeoutMs);
        if (this.live) {
          // A NixOS switch confirms once the coordinator is heard from after it (reachedCoordinator).
          this.heardAt = Date.now();
          for (const l of this.heardListeners) l();
        }
      };
      let conn: Connection | undefined;
      let failure: unknown;
      try {
        conn = await this.opts.dial(url, e.pin, streamAbort.signal);
        if (conn.rotatedPin) {
          log.info("coordinator key rotated; following its endorsement and re-pinning", { from: e.pin, to: conn.rotatedPin });
          e = { ...e, pin: conn.rotatedPin };
          await this.opts.saveEnrollment(e);
        }
        heard();
        const stream = conn.client.watch(this.opts.watchRequest(), { signal: streamAbort.signal });
        this.live = { conn, url, signal: streamAbort.signal, drop: abortStream };
        this.heardAt = Date.now();
        for (const l of this.changeListeners) l(this.live);
        for await (const msg of stream) {
          heard();
          if (msg.event.case === "desired") {
            attempt = 0;
            const exit = await this.opts.onDesired(msg.event.value);
            if (exit) return exit;
          }
        }
        log.warn("coordinator closed the watch stream; reconnecting");
      } catch (err) {
        if (signal.aborted) break;
        failure = err;
        if (err instanceof CoordinatorKeyMismatchError) log.error("coordinator key check failed", { err: err.message });
        else log.warn("connection to coordinator lost", { url, err: describeError(err) });
      } finally {
        streamAbort.abort(); // ends what runs on this connection (tunnels) with it
        clearTimeout(silence);
        signal.removeEventListener("abort", abortStream);
        this.live = undefined;
        for (const l of this.changeListeners) l(undefined);
        conn?.close();
      }
      // A busy coordinator's advice, when it gave one, sets the least wait. The backoff grows
      // per round over the addresses, so the next replica is tried after a short wait.
      await wait(retryDelay(failure, Math.floor(attempt / urls.length), this.opts.backoffMinMs, this.opts.backoffMaxMs, this.opts.random), signal);
    }
    return "stopped";
  }
}
