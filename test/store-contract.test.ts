/**
 * The Store contract (test/helpers/store-contract.ts) against SqliteStore on a temp file, EtcdStore on a
 * real etcd started for the run and MemoryStore on the real clock (the unit tier runs it on a FakeClock), plus what only one of them has: several processes on one sqlite file, and
 * a watch across an etcd restart.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { openStore } from '../src/store/index.js';
import { MemoryBackend, MemoryStore } from '../src/store/memory.js';
import { SqliteStore } from '../src/store/sqlite.js';
import type { WatchEvent } from '../src/store/types.js';
import { needsEtcd, startEtcd, type TestEtcd } from './helpers/etcd.js';
import { contractSuite, Recorder } from './helpers/store-contract.js';

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

// ---------------------------------------------------------------- memory, real clock

let memory = new MemoryBackend();
contractSuite({
  name: 'memory (real clock)',
  ttl1MaxMs: 1300,
  async setup() {
    memory = new MemoryBackend();
  },
  async teardown() {},
  open: async () => new MemoryStore({ backend: memory }),
});

// ---------------------------------------------------------------- etcd

let etcd: TestEtcd | undefined;
contractSuite({
  name: 'etcd',
  skip: needsEtcd(),
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

describe('EtcdStore: watch across an etcd restart', { skip: needsEtcd() }, () => {
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
