import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { callAgent } from '../src/agent/client.js';
import type { Endpoint } from '../src/agent/types.js';
import type { BenchRow } from '../src/bench/backends.js';
import { benchNamespaces } from '../src/bench/peer.js';
import { openStore } from '../src/store/index.js';
import { inNetns } from '../src/system/netns.js';
import { WEFT_BIN, type CliResult } from '../src/testbed/agents.js';
import { nsExec } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import { withCluster, type Cluster } from './helpers/agent-cluster.js';
import { needsRoot } from './helpers/require-root.js';

/**
 * `weft bench` on the user's own hosts: two namespace hosts with a real agent each on one host-gw network;
 * `weft bench serve` on h2 and `weft bench --peer h2` on h1, each run as a user would (the CLI inside its
 * host's namespace, talking to its own agent; they meet through the store the agents use).
 */

/** `weft ARGS` inside a host's namespace (like a shell on that host). */
function weftOn(ns: string, args: string[], timeoutMs = 90_000): Promise<CliResult> {
  const [cmd, argv] = inNetns(ns, process.execPath, [WEFT_BIN, ...args]);
  return new Promise((resolve) => {
    execFile(cmd, argv, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const c = (err as NodeJS.ErrnoException | null)?.code;
      resolve({ code: err ? (typeof c === 'number' ? c : 1) : 0, stdout, stderr });
    });
  });
}

/** `weft bench serve …` started in a host's namespace; collects output; `exited` resolves with its status. */
function serveOn(ns: string, args: string[]): { child: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null> } {
  const [cmd, argv] = inNetns(ns, process.execPath, [WEFT_BIN, 'bench', 'serve', ...args]);
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => out, err: () => err, exited };
}

/** Nothing of a bench is left: no bench netns, no store key, no bench endpoint on either agent, no iperf3 listening. */
async function assertNothingLeft(c: Cluster, port = 5201): Promise<void> {
  assert.deepEqual(await benchNamespaces(), [], 'bench containers (netns) left behind');
  const store = await openStore(c.storeUrl);
  try {
    assert.deepEqual((await store.list('weft-bench/')).map((e) => e.key), [], 'store keys left behind');
  } finally {
    await store.close();
  }
  for (const h of c.tb.hosts) {
    const eps = await callAgent<Endpoint[]>(c.agent(h).api, 'GET', '/endpoints');
    assert.deepEqual(eps.map((e) => e.container), [], `${h.id} still has endpoints`);
    const ss = await nsExec(h.ns, ['ss', '-Hltn', `sport = :${port}`], { allowFail: true });
    assert.equal(ss.stdout.trim(), '', `${h.id}: something still listens on ${port}`);
  }
}

const waitOut = (what: string, s: ReturnType<typeof serveOn>, re: RegExp) =>
  waitFor(what, 30_000, async () => re.test(s.out()) || (s.child.exitCode !== null ? `serve exited ${s.child.exitCode}: ${s.err()}` : false));

test('weft bench serve + weft bench --peer between two hosts with real agents', { timeout: 240_000, skip: needsRoot('iperf3') }, async (t) => {
  await withCluster({ backend: 'host-gw', cidr: '10.213.0.0/16', hosts: 2, containersPerHost: 0 }, async (c) => {
    const [h1, h2] = c.tb.hosts as [NonNullable<(typeof c.tb.hosts)[0]>, NonNullable<(typeof c.tb.hosts)[0]>];
    const api1 = ['--api', c.agent(h1).api];
    const api2 = ['--api', c.agent(h2).api];

    await t.test('bad input: one line, exit 2 (usage) or 1 (the other host)', async () => {
      let r = await weftOn(h1.ns, ['bench', '--peer', 'h2', '--network', 'nosuch', ...api1]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr, 'weft: unknown network "nosuch" (this host\'s agent runs: e2e)\n');
      r = await weftOn(h1.ns, ['bench', '--peer', 'h9', ...api1]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^weft: peer "h9" not found: no host with that id or underlay address shares a network with this one \(peers: h2 [\d.]+\)\n$/);
      r = await weftOn(h1.ns, ['bench', '--peer', h2.ip, '--wait', '1', ...api1]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /weft: peer h2 \([\d.]+\) is not serving a bench: run `weft bench serve` on it first \(waited 1 s\)\n$/);
      r = await weftOn(h2.ns, ['bench', 'serve', '--network', 'nosuch', ...api2]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^weft: unknown network "nosuch"/);
      await assertNothingLeft(c);
    });

    await t.test('serve on h2, measure from h1: a row per network and the underlay, then everything is gone', async () => {
      const serve = serveOn(h2.ns, [...api2, '--timeout', '180']);
      try {
        await waitOut('serve to be ready', serve, /on the other host run: {2}weft bench --peer h2\n/);
        assert.match(serve.out(), /^ {2}e2e \(host-gw\) {2}10\.213\.\d+\.\d+ {2}in weft-bench-\d+-1$/m);
        assert.equal((await benchNamespaces()).length, 1, 'serve made one bench container');

        const r = await weftOn(h1.ns, ['bench', '--peer', 'h2', '--json', '--seconds', '1', '--pings', '3', ...api1]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, /^bench: peer h2 \([\d.]+\) serves e2e 10\.213\./m);
        assert.match(r.stderr, /^bench: {3}round 1\/1: iperf3 e2e → 10\.213\.[\d.]+ \(2 s\)…$/m, 'progress while it runs');
        const out = JSON.parse(r.stdout) as { mode: string; host: { hostId: string }; peer: { hostId: string; publicIp: string }; rows: BenchRow[] };
        assert.equal(out.mode, 'peer');
        assert.deepEqual([out.host.hostId, out.peer.hostId, out.peer.publicIp], ['h1', 'h2', h2.ip]);
        assert.deepEqual(out.rows.map((x) => x.path), ['underlay', 'host-gw (network e2e)']);
        for (const row of out.rows) {
          assert.ok(row.gbps > 0 && row.rttUs > 0 && row.cpuPerGbps > 0, JSON.stringify(row));
          assert.equal(row.mtu, 1500);
          assert.equal(row.encrypted, false);
        }
        const hg = out.rows[1]!;
        assert.equal(hg.network, 'e2e');
        assert.ok(hg.gbpsVsUnderlay! > 0 && hg.rttVsUnderlay! > 0, JSON.stringify(hg));

        // the client marked its run done: serve takes everything down and exits by itself
        assert.equal(await Promise.race([serve.exited, new Promise((r) => setTimeout(() => r('still running'), 20_000))]), 0, serve.err());
        assert.match(serve.out(), /^run by h1 done; bench containers, iperf3 servers and store keys removed$/m);
      } finally {
        if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
      }
      await assertNothingLeft(c);

      // the table a person reads
      const serve2 = serveOn(h2.ns, [...api2, '--timeout', '180']);
      try {
        await waitOut('serve to be ready', serve2, /weft bench --peer h2/);
        const r = await weftOn(h1.ns, ['bench', '--peer', 'h2', '--seconds', '1', '--pings', '3', '--network', 'e2e', ...api1]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^\| underlay \| [\d.]+ \| 1× \| \d+ \| 1× \| [\d.]+ \| 1500 \| no \|$/m);
        assert.match(r.stdout, /^\| host-gw \(network e2e\) \| [\d.]+ \| [\d.]+× \| \d+ \| [\d.]+× \| [\d.]+ \| 1500 \| no \|$/m);
        assert.match(r.stdout, /container → container from h1 to h2/);
        assert.equal(await serve2.exited, 0, serve2.err());
      } finally {
        if (serve2.child.exitCode === null) serve2.child.kill('SIGKILL');
      }
      await assertNothingLeft(c);
    });

    await t.test('Ctrl-C on serve removes what it made', async () => {
      const serve = serveOn(h2.ns, [...api2, '--port', '5301']);
      try {
        await waitOut('serve to be ready', serve, /weft bench --peer h2/);
        serve.child.kill('SIGINT');
        assert.equal(await serve.exited, 0, serve.err());
        assert.match(serve.out(), /^stopped; bench containers, iperf3 servers and store keys removed$/m);
      } finally {
        if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
      }
      await assertNothingLeft(c, 5301);
    });
  });
});
