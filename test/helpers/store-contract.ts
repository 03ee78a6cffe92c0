/**
 * The Store contract, as a suite any implementation runs: SqliteStore and EtcdStore in
 * test/store-contract.test.ts, MemoryStore in test/unit/store-memory.test.ts. Each test works under its
 * own key prefix, so tests share one store per suite. Latency is not asserted here (see bench/).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Store, WatchEvent } from '../../src/store/types.js';

export interface Backend {
  name: string;
  /** Why this backend's contract cannot run here (e.g. no etcd binary): the suite is reported as skipped. */
  skip?: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** A new, independent store instance (own connection / client) on the shared backing store. */
  open(): Promise<Store>;
  /** Longest a ttl=1 s key may stay visible (etcd raises short leases to its minimum and sweeps lazily). */
  ttl1MaxMs: number;
  /**
   * The time the stores run on, for the tests that wait for a TTL: the real clock by default. A store on a
   * FakeClock passes that clock's now() and advance() here, so those tests take no real time.
   */
  time?: Time;
}

export interface Time {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realTime: Time = { now: () => Date.now(), sleep: (ms) => sleep(ms) };

/** Records a watch's events and lets a test wait for the next one. */
export class Recorder {
  readonly events: WatchEvent[] = [];
  readonly times: number[] = [];
  private waiters: (() => void)[] = [];
  private readonly w;
  constructor(store: Store, prefix: string) {
    this.w = store.watch(prefix, (ev) => {
      this.events.push(ev);
      this.times.push(performance.now());
      for (const f of this.waiters.splice(0)) f();
    });
  }
  /** Waits until at least n events arrived. */
  async until(n: number, timeoutMs = 3000): Promise<WatchEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.events.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out waiting for ${n} events; got ${JSON.stringify(this.events)}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.events;
  }
  close(): void {
    this.w.close();
  }
}

let seq = 0;
/** A fresh prefix per test so tests on one shared store do not see each other. */
const fresh = (name: string) => `t${process.pid}-${++seq}-${name}/`;

export function contractSuite(b: Backend): void {
  describe(`Store contract: ${b.name}`, { skip: b.skip }, () => {
    const time = b.time ?? realTime;
    let store: Store;
    before(async () => {
      await b.setup();
      store = await b.open();
    });
    after(async () => {
      await store?.close();
      await b.teardown();
    });

    it('get/put/list/delete', async () => {
      const p = fresh('crud');
      assert.equal(await store.get(`${p}a`), undefined);
      const e1 = await store.put(`${p}b`, 'B1');
      assert.equal(e1.key, `${p}b`);
      assert.equal(e1.value, 'B1');
      assert.ok(e1.revision > 0, 'a written key has a revision > 0');
      assert.deepEqual(await store.get(`${p}b`), e1);
      const e2 = await store.put(`${p}b`, 'B2');
      assert.ok(e2.revision > e1.revision, 'every write changes the revision');
      assert.equal((await store.get(`${p}b`))?.value, 'B2');
      await store.put(`${p}a`, 'A');
      await store.put(`${p}c/x`, 'CX');
      // siblings that share a string prefix but are outside the listed prefix
      await store.put(`${p.slice(0, -1)}-other`, 'no');
      const listed = await store.list(p);
      assert.deepEqual(
        listed.map((e) => [e.key, e.value]),
        [[`${p}a`, 'A'], [`${p}b`, 'B2'], [`${p}c/x`, 'CX']],
      );
      assert.deepEqual((await store.list(`${p}c/`)).map((e) => e.key), [`${p}c/x`]);
      assert.equal(await store.delete(`${p}a`), true);
      assert.equal(await store.delete(`${p}a`), false, 'deleting an absent key reports false');
      assert.equal(await store.get(`${p}a`), undefined);
      assert.deepEqual((await store.list(p)).map((e) => e.key), [`${p}b`, `${p}c/x`]);
    });

    it('compare-and-swap: create-only, stale revision, current revision', async () => {
      const k = `${fresh('cas')}k`;
      const created = await store.compareAndSwap(k, 0, 'v1');
      assert.ok(created, 'create-only on an absent key succeeds');
      assert.equal(created.value, 'v1');
      assert.equal(await store.compareAndSwap(k, 0, 'v-again'), undefined, 'create-only on a present key fails');
      assert.equal((await store.get(k))?.value, 'v1');

      const swapped = await store.compareAndSwap(k, created.revision, 'v2');
      assert.ok(swapped, 'CAS at the current revision succeeds');
      assert.ok(swapped.revision > created.revision);
      assert.equal(await store.compareAndSwap(k, created.revision, 'v3'), undefined, 'stale revision fails');
      assert.equal(await store.compareAndSwap(k, swapped.revision + 1000, 'v3'), undefined, 'future revision fails');
      assert.deepEqual(await store.get(k), swapped);
      assert.equal(await store.compareAndSwap(`${k}-absent`, 5, 'x'), undefined, 'CAS at rev>0 on an absent key fails');

      assert.equal(await store.delete(k, created.revision), false, 'delete at a stale revision fails');
      assert.ok(await store.get(k));
      assert.equal(await store.delete(k, swapped.revision), true);
      assert.equal(await store.get(k), undefined);
      // After a delete, create-only works again.
      assert.ok(await store.compareAndSwap(k, 0, 'v4'));
    });

    it('TTL: expired keys vanish from get/list and watchers see a delete', async () => {
      const p = fresh('ttl');
      const rec = new Recorder(store, p);
      try {
        await rec.until(1);
        const t0 = time.now();
        const e = await store.put(`${p}short`, 'gone soon', { ttlSeconds: 1 });
        await store.put(`${p}forever`, 'stays');
        assert.ok(e.expiresAt && e.expiresAt >= t0 + 900 && e.expiresAt <= time.now() + 2100, 'expiresAt reported');
        assert.equal((await store.get(`${p}short`))?.value, 'gone soon');
        // gone within the backend's bound
        while ((await store.get(`${p}short`)) !== undefined) {
          assert.ok(time.now() - t0 < b.ttl1MaxMs, `ttl=1 key still visible after ${time.now() - t0} ms`);
          await time.sleep(50);
        }
        assert.ok(time.now() - t0 >= 950, 'a ttl=1 key must not vanish early');
        assert.deepEqual((await store.list(p)).map((x) => x.key), [`${p}forever`]);
        const evs = await rec.until(4, b.ttl1MaxMs);
        assert.deepEqual(
          evs.slice(1).map((ev) => (ev.type === 'put' ? `put ${ev.entry.key}` : ev.type === 'delete' ? `delete ${ev.key}` : ev.type)),
          [`put ${p}short`, `put ${p}forever`, `delete ${p}short`],
        );
        // After expiry the key is absent for CAS too.
        assert.ok(await store.compareAndSwap(`${p}short`, 0, 'back'));
      } finally {
        rec.close();
      }
    });

    it('TTL: writing the key again renews it', async () => {
      const k = `${fresh('renew')}k`;
      await store.put(k, 'v', { ttlSeconds: 2 });
      await time.sleep(1200);
      await store.put(k, 'v', { ttlSeconds: 2 });
      await time.sleep(1300); // 2.5 s after the first write: only the renewal keeps it alive
      assert.equal((await store.get(k))?.value, 'v');
      await store.delete(k);
    });

    it('watch: resync first, then put/delete in order, only under the prefix', async () => {
      const p = fresh('watch');
      await store.put(`${p}x`, 'X');
      await store.put(`${p}y`, 'Y');
      await store.put(`${p.slice(0, -1)}z`, 'outside');
      const rec = new Recorder(store, p);
      try {
        const [first] = await rec.until(1);
        assert.equal(first?.type, 'resync');
        assert.deepEqual(
          first.type === 'resync' && first.entries.map((e) => [e.key, e.value]),
          [[`${p}x`, 'X'], [`${p}y`, 'Y']],
        );
        const a = await store.put(`${p}a`, '1');
        await store.put(`${p.slice(0, -1)}zz`, 'outside');
        await store.put(`${p}a`, '2');
        await store.delete(`${p}x`);
        await store.put(`${p}b`, '3');
        const evs = await rec.until(5);
        await time.sleep(150); // nothing else may arrive (e.g. the outside writes)
        assert.equal(rec.events.length, 5, JSON.stringify(rec.events));
        assert.deepEqual(evs[1], { type: 'put', entry: { key: `${p}a`, value: '1', revision: a.revision } });
        assert.deepEqual(
          evs.slice(1).map((ev) => (ev.type === 'put' ? `put ${ev.entry.key}=${ev.entry.value}` : ev.type === 'delete' ? `delete ${ev.key}` : ev.type)),
          [`put ${p}a=1`, `put ${p}a=2`, `delete ${p}x`, `put ${p}b=3`],
        );
      } finally {
        rec.close();
      }
      // closed: no more events
      const n = rec.events.length;
      await store.put(`${p}after-close`, 'x');
      await time.sleep(150);
      assert.equal(rec.events.length, n, 'a closed watch delivers nothing');
    });

    it('refresh: extends a TTL key without a new revision or a watch event; refuses a stale revision', async () => {
      const p = fresh('refresh');
      const rec = new Recorder(store, p);
      try {
        await rec.until(1);
        const e = await store.put(`${p}k`, 'v', { ttlSeconds: 2 });
        await rec.until(2);
        await time.sleep(1200);
        const r = await store.refresh(`${p}k`, e.revision, 2);
        assert.ok(r, 'refresh at the current revision succeeds');
        assert.equal(r.revision, e.revision, 'refresh keeps the revision');
        assert.equal(r.value, 'v');
        assert.ok(r.expiresAt && e.expiresAt && r.expiresAt > e.expiresAt, 'refresh moves the expiry');
        await time.sleep(1300); // 2.5 s after the write: only the refresh keeps it alive
        assert.deepEqual(await store.get(`${p}k`).then((x) => x && [x.value, x.revision]), ['v', e.revision]);
        assert.equal(await store.refresh(`${p}k`, e.revision + 1000, 2), undefined, 'stale revision refused');
        assert.equal(await store.refresh(`${p}absent`, 0, 2), undefined, 'absent key refused');
        const plain = await store.put(`${p}plain`, 'no ttl');
        assert.equal(await store.refresh(`${p}plain`, plain.revision, 2), undefined, 'a key without TTL is not refreshed');
        await time.sleep(150);
        assert.deepEqual(
          rec.events.slice(1).map((ev) => (ev.type === 'put' ? `put ${ev.entry.key}` : ev.type)),
          [`put ${p}k`, `put ${p}plain`],
          'refresh made no watch event',
        );
      } finally {
        rec.close();
      }
    });

    it('20 store instances racing: one create-only winner per key; 20 distinct keys all win', async () => {
      const p = fresh('race');
      const stores = await Promise.all(Array.from({ length: 20 }, () => b.open()));
      try {
        // warm up every connection so the CAS calls start together
        await Promise.all(stores.map((s) => s.get(`${p}warm`)));
        const same = await Promise.all(stores.map((s, i) => s.compareAndSwap(`${p}same`, 0, `owner-${i}`)));
        const winners = same.filter((r) => r !== undefined);
        assert.equal(winners.length, 1, `exactly one winner, got ${winners.length}`);
        assert.deepEqual(await store.get(`${p}same`), winners[0]);

        const distinct = await Promise.all(stores.map((s, i) => s.compareAndSwap(`${p}own-${i}`, 0, `v${i}`)));
        assert.ok(distinct.every((r) => r !== undefined), 'each instance creates its own key');
        assert.equal((await store.list(`${p}own-`)).length, 20);
        const revs = new Set(distinct.map((r) => r!.revision));
        assert.equal(revs.size, 20, 'every write has its own revision');
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    });
  });
}

