/** `weft docker-opts`: from the agent, else the docker0 plan the agent left in the state dir (never subnet.env alone); through the real CLI too. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { mkdtemp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { runWeft } from '../src/testbed/agents.js';
import { dockerOpts, formatDockerOpts, parseSubnetEnv } from '../src/cli/docker.js';
import { dockerEnvPath, parseDockerEnv, writeDockerEnv } from '../src/lease/docker-env.js';


const cli = (args: string[]) => runWeft(args);

/** An agent that answers POST /docker-opts as the real one does, for the networks given. */
async function fakeAgent(sock: string, nets: Record<string, { subnet: string; mtu: number }>, first: string): Promise<{ server: http.Server; bodies: unknown[] }> {
  const bodies: unknown[] = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c));
    req.on('end', () => {
      const body = text ? JSON.parse(text) : {};
      bodies.push(body);
      const name: string = body.network ?? first;
      const n = nets[name];
      const json = (code: number, v: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(v));
      };
      if (req.method !== 'POST' || req.url !== '/docker-opts') return json(404, { error: 'no such API' });
      if (!n) return json(400, { error: `unknown network "${name}" (this host runs: ${Object.keys(nets).join(', ')})` });
      const [base, len] = n.subnet.split('/');
      const gw = base!.replace(/\d+$/, (d) => String(Number(d) + 1));
      const half = Number(len) + 1;
      const upper = base!.replace(/\d+$/, (d) => String(Number(d) + 2 ** (32 - half)));
      json(200, { network: name, subnet: n.subnet, bip: `${gw}/${len}`, fixedCidr: `${upper}/${half}`, mtu: n.mtu, ipMasq: false });
    });
  });
  await new Promise<void>((r) => server.listen(sock, () => r()));
  return { server, bodies };
}

test('docker-opts asks the agent to make docker0 the bridge and prints bip, fixed-cidr, mtu and ip-masq', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wdo-'));
  const sock = path.join(dir, 'api.sock');
  const { server, bodies } = await fakeAgent(sock, { prodnet: { subnet: '10.40.7.0/24', mtu: 1450 }, small: { subnet: '10.50.0.64/26', mtu: 1500 } }, 'prodnet');
  t.after(async () => {
    server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const d = await dockerOpts({ api: sock, stateDir: dir });
  assert.equal(formatDockerOpts(d), '--bip=10.40.7.1/24 --fixed-cidr=10.40.7.128/25 --mtu=1450 --ip-masq=false');
  assert.equal(d.source, 'agent');
  assert.equal(formatDockerOpts(await dockerOpts({ api: sock, network: 'small' })), '--bip=10.50.0.65/26 --fixed-cidr=10.50.0.96/27 --mtu=1500 --ip-masq=false');
  await assert.rejects(dockerOpts({ api: sock, network: 'nope' }), /unknown network "nope" \(this host runs: prodnet, small\)/);
  const r = await cli(['docker-opts', '--api', sock, '--network', 'small']);
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '--bip=10.50.0.65/26 --fixed-cidr=10.50.0.96/27 --mtu=1500 --ip-masq=false\n');
  const e = await cli(['docker-opts', '--api', sock, '--env']);
  assert.equal(e.stdout, 'DOCKER_NETWORK_OPTIONS="--bip=10.40.7.1/24 --fixed-cidr=10.40.7.128/25 --mtu=1450 --ip-masq=false"\n');
  assert.deepEqual(bodies.slice(0, 3), [{}, { network: 'small' }, { network: 'nope' }]);
});

test("without an agent, docker-opts prints the docker0 plan the agent wrote, and refuses when there is none (never options from subnet.env alone)", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wdo-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const env = 'FLANNEL_NETWORK=10.40.0.0/16\nFLANNEL_SUBNET=10.40.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n';
  assert.deepEqual(parseSubnetEnv(env), { FLANNEL_NETWORK: '10.40.0.0/16', FLANNEL_SUBNET: '10.40.3.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'false' });
  const noAgent = path.join(dir, 'none.sock');
  // an agent ran, but docker0 is not the network's bridge yet (weft0 holds 10.40.3.1): --bip from subnet.env
  // would hand out addresses twice (issue 14), so it refuses and prints nothing
  await writeFile(path.join(dir, 'subnet.env'), env);
  await mkdir(path.join(dir, 'blue'));
  await writeFile(path.join(dir, 'blue', 'subnet.env'), env);
  for (const args of [[], ['--network', 'blue']]) {
    const r = await cli(['docker-opts', '--api', noAgent, '--state-dir', dir, ...args]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      `weft: no weft agent at ${noAgent}, and docker0 is not the bridge of ${args.length ? 'network blue' : 'any network'} on this host yet (no ${path.join(dir, args.length ? 'blue' : '<network>', 'docker.env')}; options from subnet.env alone would hand out addresses twice): start 'weft agent' and run 'weft docker-opts' once, later runs work without the agent\n`,
    );
  }
  await assert.rejects(dockerOpts({ api: noAgent, stateDir: dir }), /docker0 is not the bridge of any network/);

  // the plan as the agent writes it once docker0 is the bridge: 0644 whatever the umask, atomically
  const plan = { network: 'blue', subnet: '10.40.3.0/24', bip: '10.40.3.1/24', fixedCidr: '10.40.3.128/25', mtu: 1450, ipMasq: false as const };
  const file = dockerEnvPath(dir, 'blue');
  const umask = process.umask(0o077);
  try {
    await writeFile(file, 'stale');
    await writeDockerEnv(file, plan);
  } finally {
    process.umask(umask);
  }
  assert.equal((await stat(file)).mode & 0o777, 0o644);
  assert.deepEqual((await readdir(path.join(dir, 'blue'))).sort(), ['docker.env', 'subnet.env'], 'no temp file left');
  const text = await readFile(file, 'utf8');
  assert.match(text, /^DOCKER_NETWORK_OPTIONS="--bip=10\.40\.3\.1\/24 --fixed-cidr=10\.40\.3\.128\/25 --mtu=1450 --ip-masq=false"$/m, 'usable as dockerd\'s EnvironmentFile');
  assert.deepEqual(parseDockerEnv(text, file), plan);

  const d = await dockerOpts({ api: noAgent, stateDir: dir });
  assert.equal(formatDockerOpts(d), '--bip=10.40.3.1/24 --fixed-cidr=10.40.3.128/25 --mtu=1450 --ip-masq=false');
  assert.equal(d.source, file);
  const r = await cli(['docker-opts', '--api', noAgent, '--state-dir', dir]);
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '--bip=10.40.3.1/24 --fixed-cidr=10.40.3.128/25 --mtu=1450 --ip-masq=false\n');
  const e = await cli(['docker-opts', '--api', noAgent, '--state-dir', dir, '--network', 'blue', '--env']);
  assert.equal(e.stdout, 'DOCKER_NETWORK_OPTIONS="--bip=10.40.3.1/24 --fixed-cidr=10.40.3.128/25 --mtu=1450 --ip-masq=false"\n');
  // a network with no plan is refused even when another has one
  await mkdir(path.join(dir, 'red'));
  await writeFile(path.join(dir, 'red', 'subnet.env'), env.replace('10.40.3.1/24', '10.40.9.1/24'));
  await assert.rejects(dockerOpts({ api: noAgent, stateDir: dir, network: 'red' }), /docker0 is not the bridge of network red on this host yet/);

  // subnet.env and the plan disagree (one of them stale): refused
  await writeFile(path.join(dir, 'blue', 'subnet.env'), env.replace('10.40.3.1/24', '10.40.5.1/24'));
  await assert.rejects(dockerOpts({ api: noAgent, stateDir: dir }), /docker\.env \(--bip=10\.40\.3\.1\/24\) disagrees with .*blue\/subnet\.env \(FLANNEL_SUBNET=10\.40\.5\.1\/24\): start 'weft agent' to rewrite both$/);
  // a plan that is not whole: refused, naming the file
  await writeFile(file, text.replace(/^WEFT_DOCKER_FIXED_CIDR=.*\n/m, ''));
  await assert.rejects(dockerOpts({ api: noAgent, stateDir: dir }), /docker\.env is not a docker0 plan written by the weft agent \(a WEFT_ value is missing\)/);

  const empty = path.join(dir, 'empty');
  await mkdir(empty);
  const f = await cli(['docker-opts', '--api', noAgent, '--state-dir', empty]);
  assert.notEqual(f.code, 0);
  assert.equal(f.stdout, '');
  assert.match(f.stderr, /^weft: no weft agent at .*none\.sock and no weft state in .*empty \(start 'weft agent', or pass --api SOCK \/ --state-dir DIR\)\n$/);
});
