import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

/**
 * What a polled check answers: the value waited for when done (waitFor returns it; `true` will do), or
 * false/undefined — or a string saying why — while not yet. A check that throws counts as not yet too.
 */
export type Check<T> = () => Promise<T | false | undefined | string> | T | false | undefined | string;

/**
 * How much longer than asked a wait may take. Tests run beside other work on a 2-core machine (CI, a CPU
 * hog): a bound is a guard against hanging, not a speed goal (speed is measured by the benchmarks), so it
 * is generous. $WEFT_TEST_PATIENCE overrides the factor.
 */
export const PATIENCE = Math.max(1, Number(process.env.WEFT_TEST_PATIENCE ?? 3) || 3);

/**
 * Polls `check` every `everyMs` until it is done, for at most `ms` × PATIENCE; the timeout error names
 * `what` and the last reason.
 */
export async function waitFor<T>(what: string, ms: number, check: Check<T>, everyMs = 100): Promise<T> {
  ms *= PATIENCE;
  const until = Date.now() + ms;
  let why = '';
  for (;;) {
    try {
      const v = await check();
      if (v !== false && v !== undefined && typeof v !== 'string') return v;
      why = typeof v === 'string' ? v : '';
    } catch (err) {
      why = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() >= until) throw new Error(`timed out after ${ms} ms waiting for ${what}${why ? `: ${why}` : ''}`);
    await sleep(everyMs);
  }
}
