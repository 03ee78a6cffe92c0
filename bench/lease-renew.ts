/**
 * Lease acquire and renew cost on sqlite with N hosts in one network: N managers acquire one after the other,
 * then each renews once. Run: `npx tsc -p . && node dist/bench/lease-renew.js [N]` (default 1000).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createNetwork } from '../src/config/registry.js';
import { LeaseManager } from '../src/lease/manager.js';
import { openStore } from '../src/store/index.js';
import type { Logger } from '../src/util/log.js';

const n = Number(process.argv[2] ?? 1000);
const dir = mkdtempSync(join(tmpdir(), 'weft-bench-renew-'));
const quiet = pino({ level: 'silent' }) as unknown as Logger;
try {
  const store = await openStore(`sqlite://${join(dir, 'weft.db')}`, { create: true });
  await createNetwork(store, 'bench', { Network: '10.0.0.0/8', Backend: { Type: 'host-gw' } });
  const managers = Array.from({ length: n }, (_, i) => new LeaseManager(store, 'bench', { hostId: `h${i}`, log: quiet }));
  const t0 = performance.now();
  const acq: number[] = [];
  for (const [i, m] of managers.entries()) {
    const t = performance.now();
    await m.acquire({ publicIp: `192.168.${i >> 8}.${i & 255}` });
    acq.push(performance.now() - t);
  }
  const total = performance.now() - t0;
  const ren: number[] = [];
  for (const m of managers) {
    const t = performance.now();
    await m.renew();
    ren.push(performance.now() - t);
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(
    `sqlite, ${n} hosts: acquire total ${(total / 1000).toFixed(2)} s, first 100 ${mean(acq.slice(0, 100)).toFixed(2)} ms, ` +
      `last 100 ${mean(acq.slice(-100)).toFixed(2)} ms each; renew at ${n} leases ${mean(ren).toFixed(3)} ms each`,
  );
  await store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
