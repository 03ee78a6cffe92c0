import { InvalidArgumentError, Option } from 'commander';
import { DEFAULT_TIMEOUT_SECONDS } from '../agent/client.js';

/** Options several command groups share. */

/** `--timeout SECONDS`: how long to wait for the agent's answer (the agent may still finish after it). */
export function timeoutOption(defaultSeconds = DEFAULT_TIMEOUT_SECONDS): Option {
  return new Option('--timeout <seconds>', "how long to wait for the agent's answer").default(defaultSeconds).argParser(seconds);
}

function seconds(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0)) throw new InvalidArgumentError(`expected a number of seconds > 0, got "${v}"`);
  return n;
}

/** The --timeout value in milliseconds. */
export function timeoutMs(o: { timeout: number }): number {
  return Math.round(o.timeout * 1000);
}
