/**
 * A level-triggered wake-up: notify() before wait() is not lost. Lets loops sleep until there
 * is work, instead of polling.
 */
export class Wakeup {
  private pending = false;
  private waiter: (() => void) | undefined;

  notify(): void {
    this.pending = true;
    this.waiter?.();
  }

  /** Resolves on notify(), after `timeoutMs`, or when `signal` aborts, whichever is first. */
  wait(signal: AbortSignal, timeoutMs = 2 ** 31 - 1): Promise<void> {
    if (this.pending || signal.aborted) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.waiter = undefined;
        this.pending = false;
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener("abort", done);
      this.waiter = done;
    });
  }
}

/** Sleeps `ms`, or less when `signal` aborts. For backoff, never for synchronisation. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Wakeup().wait(signal, ms);
}

/** Full-jitter exponential backoff: a random delay up to min(max, base * 2^attempt). */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number): number {
  return Math.round(Math.random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30)));
}
