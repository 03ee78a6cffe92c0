/**
 * Time as a dependency: code that waits, expires or renews takes a Clock, so unit tests can run it on a
 * FakeClock and move time forward by hand instead of sleeping.
 *
 * Timers made through a Clock never keep the process alive (the real clock unrefs them): a renewal loop or
 * a TTL sweep must not hold a finished test or a stopping agent open. `sleep` is the exception — an awaited
 * pause is part of the work in progress.
 */

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** ms since the epoch. */
  now(): number;
  /** Calls fn once after ms. */
  setTimeout(fn: () => void, ms: number): Timer;
  /** Calls fn every ms until cancelled. */
  setInterval(fn: () => void, ms: number): Timer;
  /** Resolves after ms. */
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
  setInterval(fn, ms) {
    const t = setInterval(fn, ms);
    t.unref();
    return { cancel: () => clearInterval(t) };
  },
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

interface Pending {
  at: number;
  /** Order of creation: timers due at the same moment fire in the order they were set. */
  seq: number;
  fn: () => void;
  /** Repeat period for intervals. */
  every?: number;
  cancelled: boolean;
}

/**
 * A clock that moves only when told. advance(ms) fires every timer that falls due on the way, in time
 * order, with now() set to each timer's due time while it runs; timers set by a firing timer fire too when
 * they fall within the advanced span. Between timers, advance() lets pending promise callbacks run, so
 * async work started by a timer (a renewal) progresses as it would in real time.
 */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly pending: Pending[] = [];

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    return this.add(fn, ms, undefined);
  }

  setInterval(fn: () => void, ms: number): Timer {
    return this.add(fn, ms, Math.max(1, ms));
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, ms));
  }

  /** Number of timers waiting to fire. */
  get timerCount(): number {
    return this.pending.filter((p) => !p.cancelled).length;
  }

  /** Moves time forward by ms, firing due timers (and letting their promise callbacks run) on the way. */
  async advance(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`advance needs ms >= 0, got ${ms}`);
    const until = this.t + ms;
    await flushMicrotasks();
    for (;;) {
      const next = this.nextDue(until);
      if (!next) break;
      this.t = Math.max(this.t, next.at);
      if (next.every !== undefined) {
        next.at += next.every;
        next.seq = this.seq++;
      } else {
        next.cancelled = true;
        this.pending.splice(this.pending.indexOf(next), 1);
      }
      next.fn();
      await flushMicrotasks();
    }
    this.t = until;
    await flushMicrotasks();
  }

  private add(fn: () => void, ms: number, every: number | undefined): Timer {
    const p: Pending = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    if (every !== undefined) p.every = every;
    this.pending.push(p);
    return {
      cancel: () => {
        if (p.cancelled) return;
        p.cancelled = true;
        const i = this.pending.indexOf(p);
        if (i >= 0) this.pending.splice(i, 1);
      },
    };
  }

  private nextDue(until: number): Pending | undefined {
    let best: Pending | undefined;
    for (const p of this.pending) {
      if (p.at > until) continue;
      if (!best || p.at < best.at || (p.at === best.at && p.seq < best.seq)) best = p;
    }
    return best;
  }
}

/** Lets queued promise callbacks (and the ones they queue) run: a macrotask turn via setImmediate. */
function flushMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
