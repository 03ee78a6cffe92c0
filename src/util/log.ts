import { pino } from 'pino';

/** Structured logs go to stderr so stdout stays for command output. WEFT_LOG sets the level. */
export const log = pino({ level: process.env.WEFT_LOG ?? 'info', base: undefined }, pino.destination(2));
export type Logger = typeof log;
