/**
 * SIGTERM while `weft agent` starts: the agent stops through its own stop path (exit 0, locks released, no
 * "ready"), instead of dying of the signal half-way (signal handlers used to be installed after Agent.start).
 * The start is held inside Agent.start deterministically: the test holds the state dir's lock for a moment,
 * so the agent is waiting for it (src/agent/lock.ts: the lock file open, flock(2) retried) when the signal comes.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { openStore } from '../src/store/index.js';
import { WEFT_BIN } from '../src/testbed/agents.js';
import { randomPrefix } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import { needsRoot } from './helpers/require-root.js';

const ns = `${randomPrefix()}-sig`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-signals-'));
after(() => {
  spawnSync('ip', ['netns', 'del', ns]);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Whether process `pid` has `file` open. */
function hasOpen(pid: number, file: string): boolean {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === file;
      } catch {
        return false; // closed meanwhile
      }
    });
  } catch {
    return false; // exited
  }
}

describe('agent signals', { skip: needsRoot() }, () => {
  test('SIGTERM during start-up stops the agent cleanly', { timeout: 60_000 }, async () => {
    spawnSync('ip', ['netns', 'add', ns]);
    spawnSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const state = path.join(dir, 'state');
    fs.mkdirSync(state, { recursive: true, mode: 0o700 });
    await (await openStore(`sqlite://${dir}/w.db`, { create: true })).close(); // agents never create a database
    const lock = path.join(state, 'agent.lock');
    fs.writeFileSync(lock, '');
    // hold the agent's lock for 2 s (it waits up to 3 s for it)
    const holder = spawn('flock', ['--exclusive', lock, 'sleep', '2'], { stdio: 'ignore' });
    await waitFor('the test holds the lock', 5_000, async () => spawnSync('flock', ['--nonblock', lock, 'true']).status !== 0);
    const agent = spawn('nsenter', [`--net=/run/netns/${ns}`, process.execPath, WEFT_BIN, 'agent', '--store', `sqlite://${dir}/w.db`, '--iface', 'lo', '--state-dir', state, '--api', path.join(state, 'weft.sock'), '--host-id', 'sig', '--ui-addr', 'off', '--no-dns'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    agent.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    agent.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => agent.once('exit', (code, signal) => resolve({ code, signal })));
    try {
      // inside Agent.start: the agent has its state dir's lock file open and waits for our lock to go
      await waitFor('the agent waits for its lock', 20_000, async () => hasOpen(agent.pid!, lock));
      agent.kill('SIGTERM');
      const { code, signal } = await exited;
      assert.equal(signal, null, `the agent died of ${signal} instead of stopping; output: ${out}`);
      assert.equal(code, 0, `exit code; output: ${out}`);
      assert.ok(!out.includes('ready api='), 'a stopping agent does not say ready');
      assert.match(out, /stopping/);
      // its locks are released: the state dir can be locked at once
      assert.equal(spawnSync('flock', ['--nonblock', lock, 'true']).status, 0, 'the state dir lock is free');
    } finally {
      if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
      if (holder.exitCode === null) holder.kill('SIGKILL');
    }
  });
});
