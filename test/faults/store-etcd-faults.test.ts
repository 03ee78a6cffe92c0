/**
 * Store deadlines (issue 8 #9) and clean closes (issue 15 #5) on etcd:
 * - an etcd that accepts connections but never answers, and one whose SYNs are dropped (iptables DROP in a
 *   namespace this test makes; traffic only to that namespace's own loopback), fail within the deadline
 *   with a one-line error naming the endpoints — in the library and through `weft network ls`;
 * - close() lets calls in flight finish instead of failing them with "client was already closed".
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { openStore } from '../../src/store/index.js';
import { WEFT_BIN } from '../../src/testbed/agents.js';
import { WeftError } from '../../src/util/errors.js';
import { needsEtcd, startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { needsRoot } from '../helpers/require-root.js';

describe('etcd deadline: a server that accepts but never answers', () => {
  let server: Server;
  const sockets = new Set<Socket>();
  let port = 0;
  before(async () => {
    server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('every call fails at the deadline with a one-line error naming the endpoint', { timeout: 30_000 }, async () => {
    const s = await openStore(`etcd://127.0.0.1:${port}/weft`, { timeoutMs: 1500 });
    try {
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['list', () => s.list('')],
        ['get', () => s.get('k')],
        ['put', () => s.put('k', 'v', { ttlSeconds: 10 })],
        ['compare-and-swap', () => s.compareAndSwap('k', 0, 'v')],
        ['delete', () => s.delete('k')],
      ];
      let timedOut = 0;
      for (const [what, call] of calls) {
        await assert.rejects(call(), (err: unknown) => {
          assert.ok(err instanceof WeftError, String(err));
          // The first calls hit the deadline; after them etcd3's circuit breaker may fail the rest at once.
          assert.ok(['ESTORETIMEOUT', 'ESTORE'].includes(err.code), err.code);
          assert.match(err.message, new RegExp(`^store etcd://127\\.0\\.0\\.1:${port}/weft: ${what} (got no answer within 1\\.5 s from etcd at|failed \\(etcd at) http://127\\.0\\.0\\.1:${port}`));
          assert.doesNotMatch(err.message, /\n/);
          if (err.code === 'ESTORETIMEOUT') timedOut++;
          return true;
        });
      }
      assert.ok(timedOut >= 1, 'the deadline ended at least the first call');
    } finally {
      await s.close();
    }
  });
});

/** Runs `cmd` and resolves with its exit code and output (never rejects; killed after timeoutMs). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | string; stderr: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: timeoutMs }, (err, _stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { killed?: boolean }) | null;
      resolve({ code: e ? (e.killed ? 'killed' : (e.code ?? 1)) : 0, stderr, ms: Date.now() - t0 });
    });
  });
}

const netnsSkip = needsRoot('iptables');

describe('etcd deadline: SYNs dropped (iptables DROP in a test namespace)', { skip: netnsSkip }, () => {
  const ns = `wsf${process.pid}`;
  before(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // Only inside this namespace: its own loopback, port 2379. Nothing leaves it.
    execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-A', 'INPUT', '-p', 'tcp', '--dport', '2379', '--syn', '-j', 'DROP']);
  });
  after(() => {
    execFileSync('ip', ['netns', 'del', ns]);
  });

  it('`weft network ls` fails within the deadline with one line naming the endpoint (it hung > 90 s)', { timeout: 60_000 }, async () => {
    const env = { ...process.env, WEFT_STORE_TIMEOUT_MS: '2000' };
    const r = await run('ip', ['netns', 'exec', ns, process.execPath, WEFT_BIN, 'network', 'ls', '--store', 'etcd://127.0.0.1:2379'], env, 30_000);
    assert.equal(r.code, 1, `exit ${r.code} after ${r.ms} ms; stderr: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^weft: store etcd:\/\/127\.0\.0\.1:2379: list got no answer within 2 s from etcd at http:\/\/127\.0\.0\.1:2379$/);
  });
});

describe('etcd back after a crash', { skip: needsEtcd() }, () => {
  let etcd: TestEtcd;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  // etcd3's default circuit breaker refused every call for 5 s after three failures, so an agent whose
  // store came back still failed `attach` (CI: "Execution prevented because the circuit breaker is open").
  it('answers the first call after etcd returns, however many calls failed while it was down', { timeout: 60_000 }, async () => {
    const s = await openStore(`${etcd.url}/back-test`, { timeoutMs: 1500 });
    try {
      await s.put('k', 'before');
      let failed = 0;
      await etcd.restart(async () => {
        for (let i = 0; i < 5; i++) await s.get('k').catch(() => failed++);
      });
      assert.equal(failed, 5, 'every call failed while etcd was down');
      assert.equal((await s.get('k'))?.value, 'before');
      await s.put('k', 'after');
      assert.equal((await s.get('k'))?.value, 'after');
    } finally {
      await s.close();
    }
  });
});

describe('etcd close()', { skip: needsEtcd() }, () => {
  let etcd: TestEtcd;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  it('waits for the calls in flight; calls after it are refused as closed', { timeout: 30_000 }, async () => {
    const s = await openStore(`${etcd.url}/close-test`);
    const writes = Array.from({ length: 20 }, (_, i) => s.put(`k/${i}`, String(i), { ttlSeconds: 30 }));
    const read = s.list('k/');
    await s.close();
    const results = await Promise.allSettled([...writes, read]);
    const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
    assert.deepEqual(failed, [], 'no call in flight fails because of close()');
    await assert.rejects(s.get('k/0'), (err: unknown) => err instanceof WeftError && /is closed/.test(err.message));
    const again = await openStore(`${etcd.url}/close-test`);
    try {
      assert.equal((await again.list('k/')).length, 20);
    } finally {
      await again.close();
    }
  });
});
