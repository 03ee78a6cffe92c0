/**
 * The agent's API and host guards end to end, with real `weft agent` processes in a test-bed host
 * namespace (issue 8: #2 hostile bodies, #4 one agent per host, #10 underlay overlap at create, #11 file
 * modes and socket permissions, #12 explicit default network). Needs root; skipped otherwise.
 */
import '../src/backends/all.js';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openStore } from '../src/store/index.js';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { callAgent } from '../src/agent/client.js';
import type { AgentStatus, Endpoint } from '../src/agent/types.js';
import { inNetns } from '../src/system/netns.js';
import { alive, WEFT_BIN } from '../src/testbed/agents.js';
import { createTestbed, type Testbed, type TestbedHost } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';

const root = process.getuid?.() === 0;
const skip = root ? false : 'needs root (network namespaces)';

let tb: Testbed;
let host: TestbedHost;
let dir: string;
let store: string;
const started: ChildProcess[] = [];

interface Run {
  code: number | null;
  out: string;
}

/** Runs `weft ARGS` in the host's namespace; a process still running after `ms` is killed (by PID) and reported as code null. */
function weftIn(args: string[], ms = 20_000, env: NodeJS.ProcessEnv = {}): { child: ChildProcess; done: Promise<Run> } {
  const [cmd, argv] = inNetns(host.ns, process.execPath, [WEFT_BIN, ...args]);
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WEFT_LOG: 'silent', ...env } });
  started.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const done = new Promise<Run>((resolve) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: null, out });
    }, ms);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
  return { child, done };
}

interface Agent {
  child: ChildProcess;
  api: string;
  stateDir: string;
}

function agentArgs(o: { stateDir: string; api: string; hostId?: string; extra?: string[] }): string[] {
  return ['agent', '--store', store, '--iface', host.iface, '--state-dir', o.stateDir, '--api', o.api, '--host-id', o.hostId ?? 'h1', '--lease-ttl', '6', ...(o.extra ?? [])];
}

async function startAgent(o: { stateDir: string; api: string; hostId?: string; extra?: string[] }): Promise<Agent> {
  const { child, done } = weftIn(agentArgs(o), 600_000);
  let exited: Run | undefined;
  void done.then((r) => (exited = r));
  await waitFor('the agent to answer', 15_000, async () => {
    if (exited) throw new Error(`agent exited: ${exited.out}`);
    return (await callAgent<AgentStatus>(o.api, 'GET', '/status', undefined, { timeoutMs: 2000 })) !== undefined;
  });
  return { child, api: o.api, stateDir: o.stateDir };
}

async function stopAgent(a: Agent): Promise<void> {
  if (!a.child.pid || !alive(a.child.pid)) return;
  const gone = new Promise((r) => a.child.once('exit', r));
  a.child.kill('SIGTERM');
  await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
  if (alive(a.child.pid)) a.child.kill('SIGKILL');
}

function post(socketPath: string, urlPath: string, raw: string, headers: Record<string, string> = {}): Promise<{ status: number; body: { error?: string } }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: urlPath, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString() || '{}') }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => (['EPIPE', 'ECONNRESET'].includes(err.code ?? '') ? undefined : reject(err)));
    req.end(raw);
  });
}

const weftRoot = (args: string[]) => weftIn([...args, '--store', store]).done;

before(async () => {
  if (!root) return;
  tb = await createTestbed({ hosts: 1 });
  host = tb.hosts[0]!;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-api-e2e-'));
  store = `sqlite://${path.join(dir, 'weft.db')}`;
  // the database is made once, as `weft network create` would (agents never create one implicitly)
  await (await openStore(store, { create: true })).close();
});

after(async () => {
  if (!root) return;
  for (const c of started) if (c.pid && alive(c.pid)) c.kill('SIGKILL');
  await tb?.destroy().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
});

test('hostile API bodies get 400/413 from a real agent, which keeps running', { skip }, async () => {
  const a = await startAgent({ stateDir: path.join(dir, 'bodies'), api: path.join(dir, 'bodies', 'weft.sock') });
  try {
    const cases: Array<[string, RegExp]> = [
      ['null', /invalid \/attach request: expected a JSON object, got null/],
      ['{}', /invalid \/attach request: container: required \(expected string\)/],
      ['{"container":5}', /container: expected string, got number/],
      ['{"container":["x"]}', /container: expected string, got array/],
      ['{"container":{"a":1}}', /container: expected string, got object/],
      ['{"container":"c1","ifname":5}', /ifname: expected string, got number/],
      [JSON.stringify({ container: 'c1', name: 'n'.repeat(1000) }), /name: not a DNS name: longer than 200/],
    ];
    for (const [raw, want] of cases) {
      const r = await post(a.api, '/attach', raw, { 'content-type': 'application/json' });
      assert.equal(r.status, 400, `${raw.slice(0, 50)} → ${r.status} ${JSON.stringify(r.body)}`);
      assert.match(r.body.error ?? '', want);
    }
    const detach = await post(a.api, '/detach', 'null');
    assert.equal(detach.status, 400);
    // a 600 MB body is refused from its header; the agent neither buffers it nor dies
    const big = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        { socketPath: a.api, method: 'POST', path: '/attach', agent: false, headers: { 'content-length': String(600 * 1024 * 1024) } },
        (res) => {
          res.resume();
          resolve(res.statusCode!);
          req.destroy();
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => (['EPIPE', 'ECONNRESET'].includes(err.code ?? '') || /hang up/.test(err.message) ? undefined : reject(err)));
      req.write('x'.repeat(65 * 1024));
    });
    assert.equal(big, 413);
    // the same through the CLI: a clear line, exit 1
    const cli = await weftIn(['attach', 'nosuch', '--ifname', 'eth0;reboot', '--api', a.api]).done;
    assert.equal(cli.code, 1);
    assert.match(cli.out, /^weft: invalid \/attach request: ifname: not an interface name/);
    assert.ok(alive(a.child.pid!), 'the agent is still running');
    assert.ok(await callAgent<AgentStatus>(a.api, 'GET', '/status'));
  } finally {
    await stopAgent(a);
  }
});

test('a second agent on the host is refused, naming the PID that holds the lock', { skip }, async () => {
  const stateDir = path.join(dir, 'one');
  const api = path.join(dir, 'one', 'weft.sock');
  await weftRoot(['network', 'create', 'solo', '--subnet', '10.77.0.0/16', '--backend', 'host-gw']);
  const first = await startAgent({ stateDir, api });
  try {
    await waitFor('the first agent to join', 15_000, async () => (await callAgent<AgentStatus>(api, 'GET', '/status')).networks.length === 1);
    const before = (await callAgent<AgentStatus>(api, 'GET', '/status')).networks[0]!.subnet;
    const pid = first.child.pid!;
    const variants: Array<[string, { stateDir: string; api: string; hostId?: string }, RegExp]> = [
      ['same state dir, same socket', { stateDir, api }, new RegExp(`state dir .*one is in use by another weft agent \\(pid \\d+`)],
      ['same socket, other state dir', { stateDir: path.join(dir, 'other'), api }, new RegExp(`API socket .*one/weft\\.sock is in use by another weft agent \\(pid \\d+`)],
      ['same state dir, other host id, other socket', { stateDir, api: path.join(dir, 'other.sock'), hostId: 'intruder' }, /state dir .*one is in use by another weft agent \(pid \d+/],
    ];
    for (const [what, o, want] of variants) {
      const second = await weftIn(agentArgs(o), 20_000).done;
      assert.notEqual(second.code, null, `${what}: the second agent kept running`);
      assert.equal(second.code, 1, `${what}: ${second.out}`);
      assert.match(second.out, want, what);
      // the PID named is the first agent's (nsenter execs node: same PID)
      assert.match(second.out, new RegExp(`pid ${pid}`), `${what}: ${second.out}`);
      // the first agent still answers on its socket, with the same lease
      const st = await callAgent<AgentStatus>(api, 'GET', '/status', undefined, { timeoutMs: 5000 });
      assert.equal(st.networks[0]!.subnet, before, what);
    }
    // kill -9 frees the host for the next agent at once
    const gone = new Promise((r) => first.child.once('exit', r));
    first.child.kill('SIGKILL');
    await gone;
    const next = await startAgent({ stateDir, api });
    await stopAgent(next);
  } finally {
    await stopAgent(first);
    await weftRoot(['network', 'rm', 'solo', '--force']);
  }
});

test('under umask 000: socket 0660, state dir 0700, files 0600 (subnet.env 0644); user nobody gets EACCES on /reset', { skip }, async () => {
  const apiDir = path.join(dir, 'run');
  fs.mkdirSync(apiDir, { mode: 0o755 });
  fs.chmodSync(apiDir, 0o755);
  fs.chmodSync(dir, 0o755); // let nobody reach the socket's directory: only the socket's own mode may stop it
  const old = process.umask(0);
  let a: Agent | undefined;
  try {
    await weftRoot(['network', 'create', 'perm', '--subnet', '10.78.0.0/16', '--backend', 'host-gw']);
    const stateDir = path.join(dir, 'perm-state');
    a = await startAgent({ stateDir, api: path.join(apiDir, 'weft.sock') });
    await waitFor('the agent to join', 15_000, async () => (await callAgent<AgentStatus>(a!.api, 'GET', '/status')).networks.length === 1);
    const mode = (f: string) => fs.statSync(f).mode & 0o777;
    assert.equal(mode(a.api).toString(8), '660', 'API socket');
    assert.equal(fs.statSync(a.api).uid, 0);
    assert.equal(mode(stateDir).toString(8), '700', 'state dir');
    assert.equal(mode(path.join(stateDir, 'bridges.json')).toString(8), '600', 'bridges.json');
    assert.equal(mode(path.join(stateDir, 'subnet.env')).toString(8), '644', 'subnet.env');
    assert.equal(mode(path.join(dir, 'weft.db')).toString(8), '600', 'SQLite database');
    // nobody may not reset the host
    const script = `const r=require('http').request({socketPath:${JSON.stringify(a.api)},method:'POST',path:'/reset'},(res)=>{console.log('status',res.statusCode);res.resume()});r.on('error',(e)=>console.log('error',e.code));r.end()`;
    const nobody = await new Promise<string>((resolve) => {
      const c = spawn(process.execPath, ['-e', script], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      c.once('exit', () => resolve(out.trim()));
    });
    assert.equal(nobody, 'error EACCES');
    const st = await callAgent<AgentStatus>(a.api, 'GET', '/status');
    assert.equal(st.networks.length, 1, 'the host was not reset');
  } finally {
    process.umask(old);
    fs.chmodSync(dir, 0o700);
    if (a) await stopAgent(a);
    await weftRoot(['network', 'rm', 'perm', '--force']);
  }
});

test('attach without --network: the only network, else the --default one, else a clear refusal', { skip }, async () => {
  const stateDir = path.join(dir, 'dflt');
  const api = path.join(stateDir, 'weft.sock');
  const a = await startAgent({ stateDir, api });
  const statusNets = async () => (await callAgent<AgentStatus>(api, 'GET', '/status')).networks.map((n) => n.name).sort().join(',');
  try {
    const c1 = await tb.addContainer(host, 'c1');
    const c2 = await tb.addContainer(host, 'c2');
    const c3 = await tb.addContainer(host, 'c3');
    assert.equal((await weftRoot(['network', 'create', 'zeta', '--subnet', '10.81.0.0/16', '--backend', 'host-gw'])).code, 0);
    await waitFor('zeta joined', 15_000, async () => (await statusNets()) === 'zeta');
    const one = await weftIn(['attach', c1, '--api', api, '--json']).done;
    assert.equal(one.code, 0, one.out);
    assert.equal((JSON.parse(one.out) as Endpoint).network, 'zeta', 'the only network');
    // a network whose name sorts first must not become the default
    assert.equal((await weftRoot(['network', 'create', 'alpha', '--subnet', '10.82.0.0/16', '--backend', 'host-gw'])).code, 0);
    await waitFor('alpha joined', 15_000, async () => (await statusNets()) === 'alpha,zeta');
    const several = await weftIn(['attach', c2, '--api', api]).done;
    assert.equal(several.code, 1);
    assert.match(several.out, /^weft: several networks: pass --network NAME \(one of: alpha, zeta\), or create one with --default\n$/);
    assert.equal((await weftRoot(['network', 'create', 'mid', '--subnet', '10.83.0.0/16', '--backend', 'host-gw', '--default'])).code, 0);
    await waitFor('mid joined', 15_000, async () => (await statusNets()) === 'alpha,mid,zeta');
    const dflt = await weftIn(['attach', c3, '--api', api, '--json']).done;
    assert.equal(dflt.code, 0, dflt.out);
    assert.equal((JSON.parse(dflt.out) as Endpoint).network, 'mid', 'the network created with --default');
  } finally {
    await stopAgent(a);
    for (const n of ['zeta', 'alpha', 'mid']) await weftRoot(['network', 'rm', n, '--force']);
  }
});

test("network create refuses a range overlapping the host's underlay route", { skip }, async () => {
  const r = await weftRoot(['network', 'create', 'under', '--subnet', tb.underlayCidr]);
  assert.equal(r.code, 1, r.out);
  assert.equal(r.out, `weft: network ${tb.underlayCidr} overlaps ${tb.underlayCidr}, a route of this host (dev eth0): containers would shadow the host's own traffic; pick another range\n`);
  const ls = await weftRoot(['network', 'ls', '--json']);
  assert.ok(!(JSON.parse(ls.out) as Array<{ name: string }>).some((n) => n.name === 'under'));
});
