/**
 * One agent per host: the flock-based lock (src/agent/lock.ts) refuses a second holder naming its PID, and
 * is free again as soon as its holder is killed with -9. No root needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquireLock, prepareStateDir } from '../../src/agent/lock.js';

const LOCK_MODULE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/agent/lock.js');

test('a held lock is refused naming the holder PID, and freed by kill -9 of the holder', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-lock-'));
  const file = path.join(dir, 'agent.lock');
  try {
    // the holder: another process, as a running agent would be
    const script = `import(${JSON.stringify(LOCK_MODULE)}).then(async (m) => { await m.acquireLock(${JSON.stringify(file)}, 'state dir'); console.log('held'); setInterval(() => {}, 1000); })`;
    const holder = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((r) => holder.stdout!.once('data', () => r()));
    await assert.rejects(acquireLock(file, `state dir ${dir}`, 0.1), (err: Error) => {
      assert.match(err.message, new RegExp(`^state dir .* is in use by another weft agent \\(pid ${holder.pid}; lock .*agent\\.lock\\)`));
      return true;
    });
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);

    const exited = new Promise((r) => holder.once('exit', r));
    holder.kill('SIGKILL');
    await exited;
    const mine = await acquireLock(file, 'state dir', 5);
    assert.equal(fs.readFileSync(file, 'utf8').trim(), String(process.pid));
    // and a second taker in this process is refused too (a lock is per holder, not per process)
    await assert.rejects(acquireLock(file, 'state dir', 0.1), new RegExp(`pid ${process.pid}`));
    await mine.release();
    const again = await acquireLock(file, 'state dir', 5);
    await again.release();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the state dir is made 0700 under umask 000, and an existing one of ours is tightened', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-lock-'));
  const old = process.umask(0);
  try {
    const fresh = path.join(dir, 'a', 'state');
    prepareStateDir(fresh);
    assert.equal(fs.statSync(fresh).mode & 0o777, 0o700);
    const loose = path.join(dir, 'loose');
    fs.mkdirSync(loose, { mode: 0o777 });
    prepareStateDir(loose);
    assert.equal(fs.statSync(loose).mode & 0o777, 0o700);
  } finally {
    process.umask(old);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
