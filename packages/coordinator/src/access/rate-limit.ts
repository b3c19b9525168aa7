/**
 * Failed password logins, counted per key (a member, a source address). After `freeAttempts`
 * failures in a row the key is locked for `baseLockMs`, doubling with every further failure up
 * to `maxLockMs`; a success clears it. Memory stays bounded: at most `maxKeys` keys are tracked,
 * the stalest dropped first.
 */
export interface RateLimitOptions {
  freeAttempts: number;
  baseLockMs: number;
  maxLockMs: number;
  maxKeys: number;
  now: () => number;
}

const defaults: RateLimitOptions = { freeAttempts: 5, baseLockMs: 30_000, maxLockMs: 15 * 60_000, maxKeys: 10_000, now: Date.now };

interface Entry {
  failures: number;
  lockedUntil: number;
}

export class LoginRateLimiter {
  private readonly opts: RateLimitOptions;
  private readonly entries = new Map<string, Entry>();

  constructor(opts: Partial<RateLimitOptions> = {}) {
    this.opts = { ...defaults, ...opts };
  }

  /** Whether an attempt under this key may proceed now. */
  check(key: string): { allowed: true } | { allowed: false; retryAfterMs: number } {
    const e = this.entries.get(key);
    const wait = e ? e.lockedUntil - this.opts.now() : 0;
    return wait > 0 ? { allowed: false, retryAfterMs: wait } : { allowed: true };
  }

  recordFailure(key: string): void {
    const e = this.entries.get(key) ?? { failures: 0, lockedUntil: 0 };
    e.failures++;
    const over = e.failures - this.opts.freeAttempts;
    if (over >= 0) e.lockedUntil = this.opts.now() + Math.min(this.opts.baseLockMs * 2 ** Math.min(over, 30), this.opts.maxLockMs);
    this.entries.delete(key);
    this.entries.set(key, e);
    if (this.entries.size > this.opts.maxKeys) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }

  recordSuccess(key: string): void {
    this.entries.delete(key);
  }
}
