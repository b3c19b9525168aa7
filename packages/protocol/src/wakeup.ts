/**
 * Waiting without polling: wake-ups for loops that sleep until there is work, an abortable
 * sleep, and jittered exponential backoff for retries.
 */

/**
 * A level-triggered wake-up for a single waiter: notify() before wait() is not lost. Lets a
 * loop sleep until there is work, instead of polling. A second wait() while one is pending takes
 * its place: the first resolves at once (a spurious wake-up, which a loop that looks again
 * absorbs) and leaves nothing behind. That matters to a loop that races two wake-ups
 * (`Promise.race([a.wait(signal), b.wait(signal)])`): the loser of each round is replaced in the
 * next, and before this it kept its abort listener and timer for good, one more per round.
 */
export class Wakeup {
  private pending = false;
  /** Ends the pending wait: `woken` (notify, time-out, abort) consumes a pending notify. */
  private current: ((woken: boolean) => void) | undefined;

  notify(): void {
    this.pending = true;
    this.current?.(true);
  }

  /** Resolves on notify(), after `timeoutMs`, or when `signal` aborts, whichever is first. */
  wait(signal: AbortSignal, timeoutMs = 2 ** 31 - 1): Promise<void> {
    if (this.pending || signal.aborted) {
      this.pending = false;
      return Promise.resolve();
    }
    this.current?.(false);
    return new Promise((resolve) => {
      const finish = (woken: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        if (this.current === finish) this.current = undefined;
        if (woken) this.pending = false;
        resolve();
      };
      const onAbort = () => finish(true);
      const timer = setTimeout(() => finish(true), timeoutMs);
      signal.addEventListener("abort", onAbort);
      this.current = finish;
    });
  }
}

/** An edge-triggered wake-up for any number of waiters: notify() wakes those waiting now. */
export class Broadcast {
  private readonly waiters = new Set<() => void>();

  notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves on the next notify() or when `signal` aborts. */
  wait(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.waiters.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.waiters.add(done);
      signal.addEventListener("abort", done);
    });
  }
}

/**
 * Calls `fn` once when `signal` aborts, and at once if it has already: a listener added to an
 * aborted signal never fires, so a stop asked for before anyone listened (SIGTERM while a process
 * is still starting) would be lost and the process would run on. Returns what removes the listener.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  if (signal.aborted) {
    fn();
    return () => undefined;
  }
  signal.addEventListener("abort", fn, { once: true });
  return () => signal.removeEventListener("abort", fn);
}

/** Sleeps `ms`, or less when `signal` aborts. For backoff, never for synchronisation. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Wakeup().wait(signal, ms);
}

/**
 * Full-jitter exponential backoff: a random delay up to min(max, base * 2^attempt), attempt
 * counting from 0. `random` (in [0, 1)) is Math.random unless a test fixes it.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.round(random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30)));
}

/** At most `limit` tasks run at once; the others wait their turn, first come first served. */
export class Semaphore {
  private running = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.queue.push(resolve));
    else this.running++;
    try {
      return await task();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }
}
