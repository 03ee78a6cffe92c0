/**
 * SqliteStore file faults (issue 8 #6, #11) and its event-driven watch (issue 15 #3): a missing file is
 * never created implicitly, a corrupt/empty/foreign file is refused at open, a file deleted, replaced or
 * truncated under a running store makes every call fail naming the file, repeated faults are rate
 * limited, files weft creates are 0600 in 0700 directories, and watches are woken by inotify (not a poll).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, renameSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { openStore } from '../../src/store/index.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import type { Store, WatchEvent } from '../../src/store/types.js';
import { WeftError } from '../../src/util/errors.js';
import { RateLimitedLog } from '../../src/util/rate-limited-log.js';

let dir = '';
let n = 0;
/** A path in the test dir that does not exist yet. */
const fresh = (name = 'weft.db') => join(dir, `${++n}`, name);

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'weft-store-faults-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A weft database with a few keys at a fresh path (made through openStore's create). */
async function made(keys = 3): Promise<string> {
  const path = fresh();
  const s = await openStore(`sqlite://${path}`, { create: true });
  for (let i = 0; i < keys; i++) await s.put(`k/${i}`, 'x'.repeat(200));
  await s.close();
  return path;
}

/** Asserts a store error: a WeftError on one line that names the file and matches `why`. */
function namesFile(path: string, why: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof WeftError, String(err));
    assert.ok(err.message.includes(path), `does not name ${path}: ${err.message}`);
    assert.match(err.message, why);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  };
}

/** Waits (bounded) until `pred` holds over the recorded events. */
async function until(events: WatchEvent[], pred: (evs: WatchEvent[]) => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred(events)) {
    if (Date.now() > deadline) throw new Error(`condition not met; events: ${JSON.stringify(events)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('sqlite: opening', () => {
  it('a missing file is refused without create, naming it and `weft network create`; nothing is created', async () => {
    const path = fresh();
    await assert.rejects(openStore(`sqlite://${path}`), namesFile(path, /no weft database.*weft network create/));
    assert.equal(existsSync(path), false);
  });

  it('create makes the file 0600 and its new directories 0700, even under umask 000', async () => {
    const path = join(dir, `${++n}`, 'a', 'weft.db');
    const old = process.umask(0);
    try {
      const s = await openStore(`sqlite://${path}`, { create: true });
      await s.put('k', 'v');
      await s.close();
    } finally {
      process.umask(old);
    }
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(join(path, '..')).mode & 0o777, 0o700);
    assert.equal(statSync(join(path, '..', '..')).mode & 0o777, 0o700);
  });

  it('processes creating one database at once all open the same, complete database', { timeout: 60_000 }, async () => {
    const path = fresh();
    const mod = new URL('../../src/store/index.js', import.meta.url).href;
    const code = `
      const { openStore } = await import(${JSON.stringify(mod)});
      const s = await openStore('sqlite://' + process.argv[1], { create: true });
      await s.put('who/' + process.pid, 'x');
      await s.close();`;
    const kids = Array.from({ length: 8 }, () =>
      new Promise<string>((resolve) => {
        let err = '';
        const c = spawn(process.execPath, ['--input-type=module', '-e', code, path], { stdio: ['ignore', 'ignore', 'pipe'] });
        c.stderr.setEncoding('utf8');
        c.stderr.on('data', (d: string) => (err += d));
        c.once('close', (rc) => resolve(rc === 0 ? '' : `exit ${rc}: ${err}`));
      }),
    );
    assert.deepEqual((await Promise.all(kids)).filter((e) => e !== ''), []);
    const s = await openStore(`sqlite://${path}`);
    try {
      assert.equal((await s.list('who/')).length, 8);
    } finally {
      await s.close();
    }
  });

  it('create refuses a path whose -wal survived the database (deleted while in use)', async () => {
    const path = fresh();
    const s = await openStore(`sqlite://${path}`, { create: true });
    await s.put('k', 'v');
    rmSync(path); // s keeps its -wal and -shm open
    try {
      await assert.rejects(openStore(`sqlite://${path}`, { create: true }), namesFile(path, /deleted while in use/));
    } finally {
      await s.close().catch(() => undefined);
    }
  });

  it('an empty (truncated) file is refused, also with create', async () => {
    const path = await made();
    truncateSync(path, 0);
    rmSync(`${path}-wal`, { force: true });
    await assert.rejects(openStore(`sqlite://${path}`), namesFile(path, /empty \(truncated\?\)/));
    await assert.rejects(openStore(`sqlite://${path}`, { create: true }), namesFile(path, /empty/));
  });

  it('garbage and a file truncated mid-way are refused at open by quick_check, naming the file', async () => {
    const garbage = join(dir, `${++n}-garbage.db`);
    const big = await made(0);
    writeFileSync(garbage, Buffer.alloc(8192, 'garbage!'));
    await assert.rejects(openStore(`sqlite://${garbage}`), namesFile(garbage, /corrupt|not a SQLite database/));

    // A database of many pages, checkpointed into the main file, then cut in half.
    const s = await openStore(`sqlite://${big}`);
    for (let i = 0; i < 400; i++) await s.put(`big/${i}`, 'y'.repeat(500));
    await s.close(); // the last connection checkpoints and removes the -wal
    const size = statSync(big).size;
    assert.ok(size > 64 * 1024, `database is ${size} bytes`);
    truncateSync(big, Math.floor(size / 2 / 4096) * 4096);
    await assert.rejects(openStore(`sqlite://${big}`), namesFile(big, /corrupt/));
  });

  it('a page overwritten with garbage is refused by quick_check', async () => {
    const path = await made(0);
    const s = await openStore(`sqlite://${path}`);
    for (let i = 0; i < 400; i++) await s.put(`big/${i}`, 'z'.repeat(500));
    await s.close();
    const fd = openSync(path, 'r+');
    try {
      writeSync(fd, Buffer.alloc(4096 * 4, 0xa5), 0, 4096 * 4, 4096 * 3);
    } finally {
      closeSync(fd);
    }
    await assert.rejects(openStore(`sqlite://${path}`), namesFile(path, /corrupt/));
  });

  it('a SQLite file that is not a weft database is refused', async () => {
    const path = join(dir, `${++n}-foreign.db`);
    const other = new Database(path);
    other.exec('CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)');
    other.close();
    await assert.rejects(openStore(`sqlite://${path}`), namesFile(path, /not a weft database/));
  });
});

describe('sqlite: the file changes under a running store', () => {
  for (const [name, act, why] of [
    ['deleted', (p: string) => rmSync(p), /was deleted/],
    [
      'replaced',
      (p: string) => {
        writeFileSync(`${p}.new`, '');
        renameSync(`${p}.new`, p);
      },
      /was replaced/,
    ],
    ['truncated', (p: string) => truncateSync(p, 0), /truncated/],
  ] as const) {
    it(`${name}: every call fails loudly, naming the file`, async () => {
      const path = await made();
      const s = await openStore(`sqlite://${path}`);
      try {
        assert.equal((await s.get('k/0'))?.value.length, 200);
        act(path);
        await assert.rejects(s.get('k/0'), namesFile(path, why));
        await assert.rejects(s.list('k/'), namesFile(path, why));
        await assert.rejects(s.put('k/new', 'v'), namesFile(path, why));
        await assert.rejects(s.compareAndSwap('k/0', 0, 'v'), namesFile(path, why));
        await assert.rejects(s.delete('k/1'), namesFile(path, why));
      } finally {
        await s.close();
      }
    });
  }

  it('a write waiting on another process\'s lock ends at the deadline with an error naming the file', async () => {
    const path = await made();
    const s = new SqliteStore(path, { create: false, busyTimeoutMs: 100 });
    const locker = new Database(path);
    try {
      locker.exec('BEGIN IMMEDIATE');
      await assert.rejects(s.put('k/x', 'v'), namesFile(path, /locked by another process \(waited 100 ms\)/));
      // reads are not blocked by a writer in WAL mode
      assert.ok(await s.get('k/0'));
    } finally {
      locker.exec('ROLLBACK');
      locker.close();
      await s.close();
    }
  });
});

describe('sqlite: repeated faults are rate limited', () => {
  it('an unwritable database (lock held elsewhere) logs the first failure, not one stack per poll', { timeout: 60_000 }, async () => {
    const path = await made();
    const mod = new URL('../../src/store/sqlite.js', import.meta.url).href;
    const code = `
      const { SqliteStore } = await import(${JSON.stringify(mod)});
      const s = new SqliteStore(process.argv[1], { create: false, busyTimeoutMs: 5 });
      s.watch('ttl/', () => {});
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1 << 30);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    const writer = new SqliteStore(path, { create: false });
    const locker = new Database(path);
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (stderr += d));
    const lines = () => stderr.split('\n').filter((l) => l.trim() !== '');
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.once('data', () => resolve());
        child.once('exit', (c) => reject(new Error(`child exited ${c}: ${stderr}`)));
      });
      // A key that expires while the lock is held: every sweep of it must fail.
      await writer.put('ttl/a', 'v', { ttlSeconds: 1 });
      locker.exec('BEGIN IMMEDIATE');
      const deadline = Date.now() + 20_000;
      while (lines().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      // The old store logged a stack every 25 ms poll from here on (~40 a second).
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
      if (locker.inTransaction) locker.exec('ROLLBACK');
      locker.close();
      await writer.close();
    }
    const out = lines();
    assert.ok(out.length >= 1, 'the fault is logged');
    assert.ok(out.length <= 3, `${out.length} log lines in 2 s:\n${out.slice(0, 5).join('\n')}`);
    assert.ok(out[0]!.includes(path), `names the file: ${out[0]}`);
  });

  it('RateLimitedLog: first in full, repeats counted into one line per interval, clear() starts over', async () => {
    const out: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
    const sink = {
      warn: (obj: Record<string, unknown>, msg: string) => void out.push({ level: 'warn', obj, msg }),
      error: (obj: Record<string, unknown>, msg: string) => void out.push({ level: 'error', obj, msg }),
      info: (obj: Record<string, unknown>, msg: string) => void out.push({ level: 'info', obj, msg }),
    };
    const faults = new RateLimitedLog(sink as never, 50);
    const err = new Error('disk I/O error');
    for (let i = 0; i < 40; i++) faults.error('k', { err, url: 'sqlite:///x' }, 'write failed');
    faults.warn('other', { url: 'sqlite:///x' }, 'other fault');
    assert.equal(out.length, 2);
    assert.equal(out[0]!.obj.err, err, 'the first line carries the error (with its stack)');
    await until([] as WatchEvent[], () => out.length >= 3, 2000);
    assert.equal(out.length, 3);
    assert.match(out[2]!.msg, /^write failed \(39 more times in 0 s\)$/);
    assert.equal(out[2]!.obj.error, 'disk I/O error');
    assert.equal(out[2]!.obj.err, undefined, 'no stack on repeats');
    faults.clear('k', 'works again');
    assert.equal(out[3]!.msg, 'works again');
    faults.error('k', { err }, 'write failed');
    assert.equal(out[4]!.obj.err, err, 'after clear the next fault is logged in full');
  });
});

describe('sqlite: event-driven watch', () => {
  /** A watch recorder on `s`. */
  function record(s: Store, prefix: string): { events: WatchEvent[]; close(): void } {
    const events: WatchEvent[] = [];
    const w = s.watch(prefix, (ev) => events.push(ev));
    return { events, close: () => w.close() };
  }

  it('another process\'s write wakes the watch through inotify (the safety poll is 60 s here)', { timeout: 30_000 }, async () => {
    const path = await made();
    const s = new SqliteStore(path, { create: false, pollMs: 60_000 });
    const rec = record(s, 'w/');
    try {
      await until(rec.events, (e) => e.length === 1);
      const mod = new URL('../../src/store/sqlite.js', import.meta.url).href;
      for (const v of ['1', '2']) {
        const code = `
          const { SqliteStore } = await import(${JSON.stringify(mod)});
          const w = new SqliteStore(process.argv[1], { create: false });
          await w.put('w/k', process.argv[2]);
          await w.close();`;
        await new Promise<void>((resolve, reject) => {
          const c = spawn(process.execPath, ['--input-type=module', '-e', code, path, v], { stdio: 'inherit' });
          c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer exited ${code}`))));
        });
        await until(rec.events, (e) => e.some((ev) => ev.type === 'put' && ev.entry.value === v));
      }
    } finally {
      rec.close();
      await s.close();
    }
  });

  it('TTL expiry reaches a watcher from a timer set for the expiry (no fast poll)', { timeout: 30_000 }, async () => {
    const path = await made();
    const s = new SqliteStore(path, { create: false, pollMs: 60_000 });
    const rec = record(s, 't/');
    try {
      await until(rec.events, (e) => e.length === 1);
      const other = new SqliteStore(path, { create: false });
      await other.put('t/k', 'v', { ttlSeconds: 0.5 });
      await other.close();
      await until(rec.events, (e) => e.some((ev) => ev.type === 'delete' && ev.key === 't/k'));
      assert.equal(await s.get('t/k'), undefined);
    } finally {
      rec.close();
      await s.close();
    }
  });

  it('a database deleted under a watching store is reported (once), not silently followed', { timeout: 30_000 }, async () => {
    const path = await made();
    const out: string[] = [];
    const sink = { warn: (_o: unknown, m: string) => void out.push(m), error: (_o: unknown, m: string) => void out.push(m), info: () => undefined };
    const s = new SqliteStore(path, { create: false, log: sink as never });
    const rec = record(s, 'k/');
    try {
      await until(rec.events, (e) => e.length === 1);
      rmSync(path);
      await until([], () => out.length > 0);
      assert.match(out[0]!, new RegExp(`store watch on ${path} failed`));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(out.length, 1, out.join('\n'));
    } finally {
      rec.close();
      await s.close();
    }
  });
});
