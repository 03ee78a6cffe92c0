import { setTimeout as sleep } from 'node:timers/promises';
/**
 * The Store contract, run against both implementations: SqliteStore on a temp file and EtcdStore on a real
 * etcd started for the run. Each test works under its own key prefix, so tests share one store per suite.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openStore } from '../src/store/index.js';
import { SqliteStore } from '../src/store/sqlite.js';
import type { Store, WatchEvent } from '../src/store/types.js';
import { startEtcd, type TestEtcd } from './helpers/etcd.js';


interface Backend {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** A new, independent store instance (own connection / client) on the shared backing store. */
  open(): Promise<Store>;
  /** Longest a ttl=1 s key may stay visible (etcd raises short leases to its minimum and sweeps lazily). */
  ttl1MaxMs: number;
}

/** Records a watch's events and lets a test wait for the next one. */
class Recorder {
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

function contractSuite(b: Backend): void {
  describe(`Store contract: ${b.name}`, () => {
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
        const t0 = Date.now();
        const e = await store.put(`${p}short`, 'gone soon', { ttlSeconds: 1 });
        await store.put(`${p}forever`, 'stays');
        assert.ok(e.expiresAt && e.expiresAt >= t0 + 900 && e.expiresAt <= Date.now() + 2100, 'expiresAt reported');
        assert.equal((await store.get(`${p}short`))?.value, 'gone soon');
        // gone within the backend's bound
        while ((await store.get(`${p}short`)) !== undefined) {
          assert.ok(Date.now() - t0 < b.ttl1MaxMs, `ttl=1 key still visible after ${Date.now() - t0} ms`);
          await sleep(50);
        }
        assert.ok(Date.now() - t0 >= 950, 'a ttl=1 key must not vanish early');
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
      await sleep(1200);
      await store.put(k, 'v', { ttlSeconds: 2 });
      await sleep(1300); // 2.5 s after the first write: only the renewal keeps it alive
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
        await sleep(150); // nothing else may arrive (e.g. the outside writes)
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
      await sleep(150);
      assert.equal(rec.events.length, n, 'a closed watch delivers nothing');
    });

    it('watch: latency under 100 ms, across store instances', async () => {
      const p = fresh('latency');
      const other = await b.open();
      const rec = new Recorder(store, p);
      try {
        await rec.until(1);
        const lat: number[] = [];
        for (let i = 0; i < 10; i++) {
          const t = performance.now();
          await other.put(`${p}k${i}`, String(i));
          await rec.until(2 + i, 1000);
          lat.push(rec.times[1 + i]! - t);
          await sleep(Math.random() * 30); // land at different points of a poll cycle
        }
        assert.ok(Math.max(...lat) < 100, `watch latencies ${lat.map((x) => x.toFixed(1)).join(', ')} ms`);
      } finally {
        rec.close();
        await other.close();
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

// ---------------------------------------------------------------- sqlite

let sqliteDir = '';
contractSuite({
  name: 'sqlite',
  ttl1MaxMs: 1300,
  async setup() {
    sqliteDir = mkdtempSync(join(tmpdir(), 'weft-store-'));
  },
  async teardown() {
    rmSync(sqliteDir, { recursive: true, force: true });
  },
  open: () => openStore(`sqlite://${join(sqliteDir, 'weft.db')}`, { create: true }),
});

// ---------------------------------------------------------------- etcd

let etcd: TestEtcd | undefined;
contractSuite({
  name: 'etcd',
  // etcd raises a 1 s lease to its minimum TTL (~2 s) and checks expiry every ~500 ms
  ttl1MaxMs: 5000,
  async setup() {
    etcd = await startEtcd();
  },
  async teardown() {
    await etcd?.stop();
  },
  open: () => openStore(`${etcd!.url}/weft-test`),
});

// ---------------------------------------------------------------- sqlite only: several processes, one file

describe('SqliteStore: several instances and processes on one file', () => {
  let dir = '';
  let file = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'weft-store-mp-'));
    file = join(dir, 'shared.db');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('two instances see each other\'s writes and watches', async () => {
    const a = new SqliteStore(file);
    const b = new SqliteStore(file);
    const recA = new Recorder(a, 'two/');
    const recB = new Recorder(b, 'two/');
    try {
      await Promise.all([recA.until(1), recB.until(1)]);
      const wa = await a.put('two/from-a', 'A');
      const wb = await b.put('two/from-b', 'B');
      assert.deepEqual(await b.get('two/from-a'), wa);
      assert.deepEqual(await a.get('two/from-b'), wb);
      await b.delete('two/from-a');
      const shape = (ev: WatchEvent) => (ev.type === 'put' ? `put ${ev.entry.key}` : ev.type === 'delete' ? `delete ${ev.key}` : ev.type);
      for (const rec of [recA, recB]) {
        const evs = await rec.until(4);
        assert.deepEqual(evs.map(shape), ['resync', 'put two/from-a', 'put two/from-b', 'delete two/from-a']);
      }
      // TTL expiry swept by one instance reaches the other's watcher
      await a.put('two/ttl', 'x', { ttlSeconds: 1 });
      const evs = await recB.until(6, 2000);
      assert.deepEqual(evs.slice(4).map(shape), ['put two/ttl', 'delete two/ttl']);
    } finally {
      recA.close();
      recB.close();
      await a.close();
      await b.close();
    }
  });

  it('a watcher that falls behind the pruned change log gets a resync', async () => {
    const a = new SqliteStore(file);
    const writer = new SqliteStore(file, { keepChanges: 3, keepChangesMs: 0, pruneEvery: 1 });
    const rec = new Recorder(a, 'prune/');
    try {
      await rec.until(1);
      // These awaits never yield to timers: the watcher cannot poll until all 50 writes are done, and by
      // then all but the newest 3 log rows are gone.
      for (let i = 0; i < 50; i++) await writer.put(`prune/k${i % 5}`, String(i));
      const evs = await rec.until(2);
      assert.equal(evs[1]?.type, 'resync');
      assert.deepEqual(
        evs[1]!.type === 'resync' && evs[1].entries.map((e) => [e.key, e.value]),
        [['prune/k0', '45'], ['prune/k1', '46'], ['prune/k2', '47'], ['prune/k3', '48'], ['prune/k4', '49']],
      );
      // and it follows the log again afterwards
      await writer.put('prune/after', 'y');
      const more = await rec.until(3);
      assert.equal(more[2]?.type, 'put');
    } finally {
      rec.close();
      await a.close();
      await writer.close();
    }
  });

  it('20 processes racing create-only CAS: one winner on one key, all win on their own keys', async () => {
    const mod = new URL('../src/store/sqlite.js', import.meta.url).href;
    // Each child opens its own connection, says "ready", and races on "go" (stdin).
    const code = `
      const { SqliteStore } = await import(${JSON.stringify(mod)});
      const s = new SqliteStore(process.argv[1]);
      await s.get('warm');
      process.stdout.write('ready\\n');
      process.stdin.once('data', async () => {
        const same = await s.compareAndSwap('race/same', 0, 'p' + process.pid);
        const own = await s.compareAndSwap('race/own-' + process.pid, 0, 'x');
        process.stdout.write(JSON.stringify({ same: !!same, own: !!own }) + '\\n');
        await s.close();
        process.exit(0);
      });`;
    const kids = Array.from({ length: 20 }, () =>
      spawn(process.execPath, ['--input-type=module', '-e', code, file], { stdio: ['pipe', 'pipe', 'inherit'] }),
    );
    try {
      const outputs = kids.map(
        (k) =>
          new Promise<string>((resolve, reject) => {
            let out = '';
            k.stdout.setEncoding('utf8');
            k.stdout.on('data', (d: string) => (out += d));
            k.on('close', (c) => (c === 0 ? resolve(out) : reject(new Error(`child exited ${c}: ${out}`))));
          }),
      );
      await Promise.all(
        kids.map((k) => new Promise<void>((resolve) => k.stdout.once('data', () => resolve()))),
      );
      for (const k of kids) k.stdin.end('go\n');
      const results = (await Promise.all(outputs)).map((o) => JSON.parse(o.split('\n')[1]!) as { same: boolean; own: boolean });
      assert.equal(results.filter((r) => r.same).length, 1, JSON.stringify(results));
      assert.ok(results.every((r) => r.own));
      const s = new SqliteStore(file);
      try {
        assert.equal((await s.list('race/own-')).length, 20);
        assert.match((await s.get('race/same'))!.value, /^p\d+$/);
      } finally {
        await s.close();
      }
    } finally {
      for (const k of kids) if (k.exitCode === null && k.pid) process.kill(k.pid, 'SIGKILL');
    }
  });
});

// ---------------------------------------------------------------- etcd only: watch survives an etcd restart

describe('EtcdStore: watch across an etcd restart', () => {
  let server: TestEtcd | undefined;
  before(async () => {
    server = await startEtcd();
  });
  after(async () => {
    await server?.stop();
  });

  it('re-lists (fresh resync) and keeps delivering events after etcd comes back', async () => {
    const store = await openStore(`${server!.url}/weft-restart`);
    const rec = new Recorder(store, 'r/');
    try {
      await rec.until(1);
      await store.put('r/before', '1');
      await rec.until(2);
      await server!.restart(); // SIGKILL + start on the same ports and data
      // A fresh client writes once etcd is back; the old watch must come back by itself.
      const other = await openStore(`${server!.url}/weft-restart`);
      try {
        await other.put('r/after', '2');
      } finally {
        await other.close();
      }
      const deadline = Date.now() + 15_000;
      const sawAfter = () =>
        rec.events.slice(2).some((ev) =>
          ev.type === 'resync' ? ev.entries.some((e) => e.key === 'r/after') : ev.type === 'put' && ev.entry.key === 'r/after',
        );
      while (!sawAfter()) {
        assert.ok(Date.now() < deadline, `no event for r/after: ${JSON.stringify(rec.events)}`);
        await sleep(50);
      }
      const resync = rec.events.slice(2).find((ev) => ev.type === 'resync');
      assert.ok(resync && resync.type === 'resync', 'a new resync after the reconnect');
      assert.ok(resync.entries.some((e) => e.key === 'r/before'), 'the resync holds the full state');
      // and live events flow again through the re-established watch
      const n = rec.events.length;
      await store.put('r/live', '3');
      const evs = await rec.until(n + 1, 5000);
      assert.deepEqual(evs[n], { type: 'put', entry: { key: 'r/live', value: '3', revision: (await store.get('r/live'))!.revision } });
    } finally {
      rec.close();
      await store.close();
    }
  });
});
