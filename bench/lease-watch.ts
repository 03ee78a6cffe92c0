/**
 * watchLeases per-event cost: how long the lease watch takes to apply one store event and hand out the
 * new set, with N leases (and N host records) already known. In-memory store, no I/O: this is the watch's
 * own CPU cost. Run: `npx tsc -p . && node dist/bench/lease-watch.js [N ...]` (default 100 1000).
 */
import { hostRecordToJson, leaseToJson } from '../src/lease/codec.js';
import { watchLeases } from '../src/lease/leases.js';
import { intToIp } from '../src/net/ipv4.js';
import { networkKeys } from '../src/store/layout.js';
import { MemoryStore } from '../src/store/memory.js';
import type { WatchEvent } from '../src/store/types.js';

/** A MemoryStore that times every watch callback. */
class TimedStore extends MemoryStore {
  spentMs = 0;
  calls = 0;
  override watch(prefix: string, onEvent: (ev: WatchEvent) => void) {
    return super.watch(prefix, (ev) => {
      const t = performance.now();
      onEvent(ev);
      this.spentMs += performance.now() - t;
      this.calls++;
    });
  }
}

const subnet = (i: number) => `${intToIp((10 << 24) + (i + 1) * 256)}/24`;
const tick = () => new Promise((r) => setImmediate(r));

async function measure(n: number, events: number): Promise<{ n: number; perEventMs: number; seen: number }> {
  const store = new TimedStore();
  const keys = networkKeys(store, 'bench');
  for (let i = 0; i < n; i++) {
    await store.put(keys.subnet(subnet(i)), leaseToJson({ publicIp: `192.168.${i >> 8}.${i & 255}`, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` } }), { ttlSeconds: 3600 });
    await store.put(keys.host(`h${i}`), hostRecordToJson({ hostId: `h${i}`, subnet: subnet(i), publicIp: '192.168.0.1', expiresAt: Date.now() + 3600_000 }));
  }
  let seen = 0;
  const w = watchLeases(store, 'bench', (all) => (seen = all.length));
  await tick();
  store.spentMs = 0;
  store.calls = 0;
  // events: rewrites of existing leases (a changed VtepMAC), one at a time
  for (let e = 0; e < events; e++) {
    const i = (e * 7919) % n;
    await store.put(keys.subnet(subnet(i)), leaseToJson({ publicIp: `192.168.${i >> 8}.${i & 255}`, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: `02:00:00:01:${(e >> 8).toString(16).padStart(2, '0')}:${(e & 255).toString(16).padStart(2, '0')}` } }), { ttlSeconds: 3600 });
    await tick();
  }
  w.close();
  return { n, perEventMs: store.spentMs / store.calls, seen };
}

const sizes = process.argv.slice(2).map(Number).filter((x) => x > 0);
for (const n of sizes.length ? sizes : [100, 1000]) {
  await measure(n, 200); // warm-up
  const r = await measure(n, 1000);
  console.log(`watchLeases, ${r.n} leases: ${(r.perEventMs * 1000).toFixed(1)} µs per event (set size seen: ${r.seen})`);
}
