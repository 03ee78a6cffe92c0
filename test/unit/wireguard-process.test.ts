import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { livePidFromFile, processAlive, stopByPidFile, superviseProcess } from '../../src/system/process.js';
import { waitFor } from '../../src/testbed/wait.js';
import { log } from '../../src/util/log.js';

/** The process supervisor wireguard-go (and bird) run under: no root needed, `sleep` stands in for the daemon. */

const quiet = log.child({});
quiet.level = 'silent';
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'weft-proc-'));

test('attached: started, restarted with backoff after it dies, stopped by PID', async () => {
  const starts: string[] = [];
  const exits: string[] = [];
  const s = await superviseProcess({
    name: 'sleeper',
    cmd: 'sleep',
    args: ['30'],
    log: quiet,
    backoff: { initialMs: 50 },
    onStart: async (_pid, how) => void starts.push(how),
    onExit: (why) => void exits.push(why),
  });
  const first = s.pid!;
  try {
    assert.ok(processAlive(first));
    process.kill(first, 'SIGKILL');
    await waitFor('a restart', 5000, () => s.pid !== undefined && s.pid !== first);
    assert.deepEqual(starts, ['started', 'restarted']);
    assert.equal(s.restarts, 1);
    assert.deepEqual(exits, ['killed by SIGKILL']);
    assert.equal(s.lastExit, 'killed by SIGKILL');
  } finally {
    const second = s.pid!;
    await s.stop();
    assert.equal(processAlive(second), false);
    assert.equal(s.running, false);
  }
  // stop() is final: no restart after it
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(s.pid, undefined);
});

test('detached: outlives release(), the next supervisor adopts the same PID, stop() removes the PID file', async () => {
  const dir = tmp();
  const pidFile = path.join(dir, 'x.pid');
  let pid: number | undefined;
  try {
    const a = await superviseProcess({ name: 'sleeper', cmd: 'sleep', args: ['30'], log: quiet, pidFile, logFile: path.join(dir, 'x.log') });
    pid = a.pid!;
    assert.equal(livePidFromFile(pidFile), pid);
    assert.equal((fs.statSync(pidFile).mode & 0o777).toString(8), '600');
    await a.release();
    assert.ok(processAlive(pid), 'a released detached process keeps running');
    const hows: string[] = [];
    const b = await superviseProcess({ name: 'sleeper', cmd: 'sleep', args: ['30'], log: quiet, pidFile, pollMs: 50, backoff: { initialMs: 50 }, onStart: async (_p, how) => void hows.push(how) });
    assert.equal(b.pid, pid);
    assert.equal(b.adopted, true);
    assert.deepEqual(hows, ['adopted']);
    // an adopted process is not our child: its death is noticed by polling, and it is started again
    process.kill(pid, 'SIGKILL');
    await waitFor('a new process after the adopted one died', 5000, () => b.pid !== undefined && b.pid !== pid);
    assert.deepEqual(hows, ['adopted', 'restarted']);
    pid = b.pid!;
    await b.stop();
    assert.equal(processAlive(pid), false);
    assert.equal(fs.existsSync(pidFile), false);
  } finally {
    if (pid && processAlive(pid)) process.kill(pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a PID file naming another process (recycled PID) is not adopted, and stopByPidFile leaves that process alone', async () => {
  const dir = tmp();
  const pidFile = path.join(dir, 'x.pid');
  try {
    // our own PID with a wrong start time: what a file left from before a reboot looks like
    fs.writeFileSync(pidFile, `${process.pid} 1\n`);
    assert.equal(livePidFromFile(pidFile), undefined);
    assert.equal(await stopByPidFile(pidFile), undefined);
    assert.equal(fs.existsSync(pidFile), false);
    fs.writeFileSync(pidFile, 'garbage');
    assert.equal(livePidFromFile(pidFile), undefined);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the first start fails clearly: a missing binary, or onStart failing (nothing is left running)', async () => {
  await assert.rejects(superviseProcess({ name: 'nothing', cmd: '/nonexistent/weft-no-such-binary', args: [], log: quiet }), /weft-no-such-binary: command not found/);
  let pid: number | undefined;
  await assert.rejects(
    superviseProcess({
      name: 'sleeper',
      cmd: 'sleep',
      args: ['30'],
      log: quiet,
      onStart: async (p) => {
        pid = p;
        throw new Error('cannot configure');
      },
    }),
    /cannot configure/,
  );
  assert.ok(pid);
  assert.equal(processAlive(pid), false);
});
