/**
 * A log for faults that repeat (a store that stays unwritable, a file that is gone): the first occurrence
 * of a key is logged in full, repeats within `intervalMs` are only counted, and once per interval one
 * line says how many there were (message only, no stack). `clear(key)` ends a fault, so the next one is
 * logged in full again.
 *
 *   const faults = new RateLimitedLog(log);
 *   faults.warn('sweep', { err, url }, 'store sweep failed');
 */
import type { Logger } from './log.js';

type Level = 'warn' | 'error';

interface Fault {
  level: Level;
  msg: string;
  obj: Record<string, unknown>;
  /** Repeats since the last line written. */
  repeats: number;
  timer: NodeJS.Timeout | undefined;
}

export class RateLimitedLog {
  private readonly faults = new Map<string, Fault>();

  constructor(
    private readonly log: Pick<Logger, 'warn' | 'error' | 'info'>,
    private readonly intervalMs = 30_000,
  ) {}

  warn(key: string, obj: Record<string, unknown>, msg: string): void {
    this.note('warn', key, obj, msg);
  }

  error(key: string, obj: Record<string, unknown>, msg: string): void {
    this.note('error', key, obj, msg);
  }

  /** The fault under `key` is over: writes its pending count (if any) and forgets it. */
  clear(key: string, recovered?: string): void {
    const f = this.faults.get(key);
    if (!f) return;
    this.flush(key);
    clearTimeout(f.timer);
    this.faults.delete(key);
    if (recovered) this.log.info(f.obj.url !== undefined ? { url: f.obj.url } : {}, recovered);
  }

  /** True while a fault under `key` is being suppressed. */
  active(key: string): boolean {
    return this.faults.has(key);
  }

  private note(level: Level, key: string, obj: Record<string, unknown>, msg: string): void {
    const f = this.faults.get(key);
    if (!f) {
      this.log[level](obj, msg);
      this.faults.set(key, { level, msg, obj: brief(obj), repeats: 0, timer: undefined });
      return;
    }
    f.repeats++;
    f.level = level;
    f.msg = msg;
    f.obj = brief(obj);
    f.timer ??= setTimeout(() => this.flush(key), this.intervalMs).unref();
  }

  private flush(key: string): void {
    const f = this.faults.get(key);
    if (!f) return;
    f.timer = undefined;
    if (f.repeats === 0) return;
    this.log[f.level]({ ...f.obj, repeats: f.repeats }, `${f.msg} (${f.repeats} more times in ${Math.round(this.intervalMs / 1000)} s)`);
    f.repeats = 0;
  }
}

/** The object of a repeat line: an error becomes its message (the first line had the stack). */
function brief(obj: Record<string, unknown>): Record<string, unknown> {
  const { err, ...rest } = obj;
  return err === undefined ? rest : { ...rest, error: err instanceof Error ? err.message : String(err) };
}
