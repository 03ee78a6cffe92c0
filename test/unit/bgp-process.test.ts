import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { findRunning, pidAlive, superviseProcess, terminatePid } from '../../src/system/process.js';
import { waitFor } from '../../src/testbed/wait.js';

/** superviseProcess with `sleep` as the child: restart after a death, adopt by PID file, stop by PID. No root. */

const log = pino({ level: 'silent' });

test('supervised process: restarted when it dies, adopted by a second supervisor, stopped by PID', { timeout: 30_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-proc-'));
  const pidFile = path.join(dir, 'x.pid');
  const started: number[] = [];
  const p = superviseProcess({ cmd: 'sleep', args: ['300'], name: 'sleep', log, detached: true, pidFile, backoffMs: { min: 50, max: 200 }, onStart: (i) => started.push(i.pid) });
  const pids: number[] = [];
  try {
    await waitFor('first start', 5000, () => p.running());
    const first = p.pid!;
    pids.push(first);
    assert.equal(Number(fs.readFileSync(pidFile, 'utf8')), first);
    assert.equal(findRunning(pidFile, 'sleep', ['300']), first);
    assert.equal(findRunning(pidFile, 'sleep', ['301']), undefined, 'another command line is not adopted');

    process.kill(first, 'SIGKILL');
    const second = await waitFor('restart', 5000, () => (p.pid && p.pid !== first && p.running() ? p.pid : undefined));
    pids.push(second);
    assert.equal(p.restarts, 1);
    assert.equal(p.adopted, false);

    // the agent goes away: the process stays; a new supervisor adopts it and notices its death by polling
    p.release();
    const q = superviseProcess({ cmd: 'sleep', args: ['300'], name: 'sleep', log, detached: true, pidFile, pollMs: 50, backoffMs: { min: 50, max: 200 } });
    try {
      assert.equal(q.adopted, true);
      assert.equal(q.pid, second);
      process.kill(second, 'SIGKILL');
      const third = await waitFor('restart of the adopted one', 5000, () => (q.pid && q.pid !== second && q.running() ? q.pid : undefined));
      pids.push(third);
      assert.equal(q.adopted, false);
      await q.stop(2000);
      assert.equal(pidAlive(third), false);
      assert.ok(!fs.existsSync(pidFile), 'PID file removed on stop');
    } finally {
      await q.stop(500);
    }
    assert.deepEqual(started.slice(0, 2), pids.slice(0, 2));
  } finally {
    await p.stop(500);
    for (const pid of pids) await terminatePid(pid, 500);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a command that does not exist is retried with backoff, never throws', { timeout: 10_000 }, async () => {
  const p = superviseProcess({ cmd: '/nonexistent/weft-nothing', args: [], name: 'nothing', log, backoffMs: { min: 20, max: 40 } });
  try {
    await waitFor('a few retries', 5000, () => p.restarts >= 2);
    assert.equal(p.running(), false);
  } finally {
    await p.stop(100);
  }
});
