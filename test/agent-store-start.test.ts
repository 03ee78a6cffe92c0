/**
 * An agent whose store does not answer while it starts (etcd overloaded by 50 agents starting at once, or
 * down) keeps running: the API answers, and the networks are joined when the store answers (the networks
 * watch lists them again). It used to exit with "list got no answer within 5 s" (issue 15: the N=50 etcd
 * scale run lost a quarter of its agents that way).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { WEFT_BIN } from '../src/testbed/agents.js';
import { randomPrefix } from '../src/testbed/index.js';
import { PATIENCE, waitFor } from '../src/testbed/wait.js';
import { needsRoot } from './helpers/require-root.js';

const ns = `${randomPrefix()}-sst`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-store-start-'));
after(() => {
  spawnSync('ip', ['netns', 'del', ns]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('agent start with a store that does not answer', { skip: needsRoot() }, () => {
  test('the agent stays up, answers its API and stops cleanly', { timeout: 120_000 }, async () => {
    spawnSync('ip', ['netns', 'add', ns]);
    spawnSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // Only inside this namespace: connections to its own 127.0.0.1:2379 are never answered.
    spawnSync('ip', ['netns', 'exec', ns, 'iptables', '-A', 'INPUT', '-p', 'tcp', '--dport', '2379', '--syn', '-j', 'DROP']);
    const state = path.join(dir, 'state');
    fs.mkdirSync(state, { recursive: true, mode: 0o700 });
    const api = path.join(state, 'weft.sock');
    const env = { ...process.env, WEFT_STORE_TIMEOUT_MS: '1000' };
    const agent = spawn('nsenter', [`--net=/run/netns/${ns}`, process.execPath, WEFT_BIN, 'agent', '--store', 'etcd://127.0.0.1:2379', '--iface', 'lo', '--state-dir', state, '--api', api, '--host-id', 'sst', '--ui-addr', 'off', '--no-dns'], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    agent.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    agent.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => agent.once('exit', (code, signal) => resolve({ code, signal })));
    try {
      await waitFor('the agent is ready (or exited)', 30_000 * PATIENCE, async () => out.includes('ready api=') || agent.exitCode !== null);
      assert.equal(agent.exitCode, null, `the agent exited; output: ${out}`);
      assert.match(out, /cannot list the networks in the store; joining them when it answers/);
      const status = () => {
        const st = spawnSync('nsenter', [`--net=/run/netns/${ns}`, process.execPath, WEFT_BIN, 'status', '--json', '--api', api], { encoding: 'utf8', timeout: 30_000 * PATIENCE });
        assert.equal(st.status, 0, `weft status: ${st.stderr}`);
        return JSON.parse(st.stdout) as { networks: unknown[]; store?: { url: string; healthy: boolean; error?: string; checkedAt?: number } };
      };
      assert.deepEqual(status().networks, []);
      // status says the store is unreachable (once the background probe has tried it)
      let store: ReturnType<typeof status>['store'];
      await waitFor('the store probe has run', 20_000 * PATIENCE, async () => (store = status().store)?.checkedAt !== undefined || JSON.stringify(store));
      assert.equal(store?.healthy, false, `status.store: ${JSON.stringify(store)}`);
      assert.equal(store?.url, 'etcd://127.0.0.1:2379');
      assert.match(store?.error ?? '', /answer|timed out|deadline|unavailable/i, `status.store.error: ${store?.error}`);
      agent.kill('SIGTERM');
      const { code, signal } = await exited;
      assert.equal(signal, null, `the agent died of ${signal}; output: ${out}`);
      assert.equal(code, 0, `exit code; output: ${out}`);
    } finally {
      if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
    }
  });
});
