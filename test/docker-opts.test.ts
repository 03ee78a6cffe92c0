/** `weft docker-opts`: from the agent's /status, else from subnet.env in the state dir; through the real CLI too. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { runWeft } from '../src/testbed/agents.js';
import { dockerOpts, formatDockerOpts, parseSubnetEnv } from '../src/cli/docker.js';


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

test('docker-opts falls back to subnet.env when no agent answers', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wdo-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const env = 'FLANNEL_NETWORK=10.40.0.0/16\nFLANNEL_SUBNET=10.40.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n';
  assert.deepEqual(parseSubnetEnv(env), { FLANNEL_NETWORK: '10.40.0.0/16', FLANNEL_SUBNET: '10.40.3.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'false' });
  await writeFile(path.join(dir, 'subnet.env'), env);
  await mkdir(path.join(dir, 'blue'));
  await writeFile(path.join(dir, 'blue', 'subnet.env'), env.replace('10.40.3.1/24', '10.60.9.1/24').replace('1450', '1400'));
  const noAgent = path.join(dir, 'none.sock');
  const d = await dockerOpts({ api: noAgent, stateDir: dir });
  assert.equal(formatDockerOpts(d), '--bip=10.40.3.1/24 --mtu=1450 --ip-masq=false');
  assert.equal(d.source, path.join(dir, 'subnet.env'));
  assert.equal(formatDockerOpts(await dockerOpts({ api: noAgent, stateDir: dir, network: 'blue' })), '--bip=10.60.9.1/24 --mtu=1400 --ip-masq=false');
  const r = await cli(['docker-opts', '--api', noAgent, '--state-dir', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '--bip=10.40.3.1/24 --mtu=1450 --ip-masq=false\n');
  const empty = path.join(dir, 'empty');
  await mkdir(empty);
  const f = await cli(['docker-opts', '--api', noAgent, '--state-dir', empty]);
  assert.notEqual(f.code, 0);
  assert.equal(f.stdout, '');
  assert.match(f.stderr, /^weft: no weft agent at .*none\.sock and no subnet\.env in .*empty \(start 'weft agent', or pass --api SOCK \/ --state-dir DIR\)\n$/);
});
