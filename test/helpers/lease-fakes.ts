/** Shared pieces of the fast lease tests: a memory store on a fake clock, a network, a log that keeps lines. */
import '../../src/backends/all.js';
import { pino } from 'pino';
import { createNetwork } from '../../src/config/registry.js';
import { MemoryBackend, MemoryStore } from '../../src/store/memory.js';
import { FakeClock } from '../../src/util/clock.js';
import type { Logger } from '../../src/util/log.js';

export const quiet = pino({ level: 'silent' }) as unknown as Logger;

/** A logger that keeps what it was told. */
export function captureLog(): { log: Logger; lines: () => Array<{ level: number; msg: string }> } {
  const out: string[] = [];
  const log = pino({ level: 'info', base: undefined }, { write: (s: string) => void out.push(s) }) as unknown as Logger;
  return { log, lines: () => out.map((l) => JSON.parse(l) as { level: number; msg: string }) };
}

/** One in-memory "cluster": a backend on a fake clock; open() is another host's store handle. */
export function memoryCluster(opts: { flannelLayout?: boolean } = {}) {
  const clock = new FakeClock();
  const backend = new MemoryBackend({ clock });
  const open = () => new MemoryStore({ backend, flannelLayout: opts.flannelLayout ?? false });
  return { clock, backend, open, admin: open() };
}

let netSeq = 0;
/** A new network with `count` /24 subnets starting at 10.<n>.0.0 (SubnetMin given: the first one counts). */
export async function makeNetwork(store: MemoryStore, count: number, extra: Record<string, unknown> = {}): Promise<string> {
  const n = (++netSeq % 250) + 1;
  const name = `net${netSeq}`;
  await createNetwork(store, name, {
    Network: `10.${n}.0.0/16`,
    SubnetMin: `10.${n}.0.0`,
    SubnetMax: `10.${n}.${count - 1}.0`,
    Backend: { Type: 'vxlan', VNI: n },
    ...extra,
  });
  return name;
}

/** Awaits p while moving the fake clock forward (retry pauses inside p wait on it). */
export async function pump<T>(clock: FakeClock, p: Promise<T>, stepMs = 10, maxSteps = 100_000): Promise<T> {
  let done = false;
  const settled = p.finally(() => (done = true));
  settled.catch(() => undefined);
  for (let i = 0; !done && i < maxSteps; i++) await clock.advance(stepMs);
  return settled;
}
