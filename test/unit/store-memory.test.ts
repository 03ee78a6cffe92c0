/**
 * The Store contract against MemoryStore on a FakeClock (its TTL waits take no real time; the e2e tier's
 * test/store-contract.test.ts runs it on the real clock), plus its fake-clock behaviour.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryBackend, MemoryStore } from '../../src/store/memory.js';
import type { WatchEvent } from '../../src/store/types.js';
import { FakeClock } from '../../src/util/clock.js';
import { contractSuite } from '../helpers/store-contract.js';

let clock = new FakeClock();
let backend = new MemoryBackend({ clock });
contractSuite({
  name: 'memory on a FakeClock',
  ttl1MaxMs: 1300,
  time: { now: () => clock.now(), sleep: (ms) => clock.advance(ms) },
  async setup() {
    clock = new FakeClock();
    backend = new MemoryBackend({ clock });
  },
  async teardown() {},
  open: async () => new MemoryStore({ backend }),
});

describe('MemoryStore on a FakeClock', () => {
  it('expires keys exactly when the clock passes their TTL, with a delete event', async () => {
    const clock = new FakeClock();
    const store = new MemoryStore({ clock });
    const events: WatchEvent[] = [];
    const w = store.watch('k/', (ev) => events.push(ev));
    try {
      await clock.advance(0);
      const e = await store.put('k/a', '1', { ttlSeconds: 10 });
      assert.equal(e.expiresAt, clock.now() + 10_000);
      await clock.advance(9_999);
      assert.equal((await store.get('k/a'))?.value, '1');
      await clock.advance(1);
      assert.equal(await store.get('k/a'), undefined);
      assert.deepEqual(events.map((ev) => ev.type), ['resync', 'put', 'delete']);
      // refresh moves the expiry, no event
      const b = await store.put('k/b', '2', { ttlSeconds: 10 });
      await clock.advance(8_000);
      assert.ok(await store.refresh('k/b', b.revision, 10));
      await clock.advance(8_000);
      assert.equal((await store.get('k/b'))?.revision, b.revision);
      assert.deepEqual(events.map((ev) => ev.type), ['resync', 'put', 'delete', 'put']);
      await clock.advance(2_000);
      assert.equal(await store.get('k/b'), undefined);
      assert.equal(events.at(-1)?.type, 'delete');
    } finally {
      w.close();
    }
  });

  it('a watch opened after a key expired (not yet swept) starts with the resync, without a stray delete', async () => {
    const clock = new FakeClock();
    const store = new MemoryStore({ clock });
    await store.put('e/old', 'x', { ttlSeconds: 1 });
    // the clock moves without firing timers (as if the sweep were late): the key is expired but still held
    (clock as unknown as { t: number }).t += 5_000;
    const events: WatchEvent[] = [];
    const w = store.watch('e/', (ev) => events.push(ev));
    await new Promise((r) => setImmediate(r));
    w.close();
    assert.deepEqual(events, [{ type: 'resync', entries: [] }]);
  });

  it('handles on one backend share data; closing one closes only its watches', async () => {
    const a = new MemoryStore();
    const b = a.open();
    const seen: WatchEvent[] = [];
    b.watch('x/', (ev) => seen.push(ev));
    const wa = a.watch('x/', () => undefined);
    await a.put('x/1', 'one');
    assert.equal((await b.get('x/1'))?.value, 'one');
    await a.close();
    await assert.rejects(a.get('x/1'), /closed/);
    await b.put('x/2', 'two');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(seen.map((ev) => ev.type), ['resync', 'put', 'put']);
    wa.close();
    await b.close();
  });
});
