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

async function fakeAgent(sock: string, status: unknown): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(status));
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"no such API"}');
    }
  });
  await new Promise<void>((r) => server.listen(sock, () => r()));
  return server;
}

test('docker-opts from the agent API', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wdo-'));
  const sock = path.join(dir, 'api.sock');
  const server = await fakeAgent(sock, {
    hostId: 'A',
    publicIp: '192.0.2.1',
    iface: 'eth0',
    networks: [
      { name: 'prodnet', subnet: '10.40.7.0/24', backend: 'vxlan', bridge: 'weft0', mtu: 1450, peers: [] },
      { name: 'small', subnet: '10.50.0.64/26', backend: 'host-gw', bridge: 'weft1', mtu: 1500, peers: [] },
    ],
  });
  t.after(async () => {
    server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const d = await dockerOpts({ api: sock, stateDir: dir });
  assert.equal(formatDockerOpts(d), '--bip=10.40.7.1/24 --mtu=1450');
  assert.equal(d.source, 'agent');
  assert.equal(formatDockerOpts(await dockerOpts({ api: sock, network: 'small' })), '--bip=10.50.0.65/26 --mtu=1500');
  await assert.rejects(dockerOpts({ api: sock, network: 'nope' }), /this host has not joined network nope \(joined: prodnet, small\)/);
  const r = await cli(['docker-opts', '--api', sock, '--network', 'small']);
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '--bip=10.50.0.65/26 --mtu=1500\n');
  const e = await cli(['docker-opts', '--api', sock, '--env']);
  assert.equal(e.stdout, 'DOCKER_NETWORK_OPTIONS="--bip=10.40.7.1/24 --mtu=1450"\n');
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
  assert.equal(formatDockerOpts(d), '--bip=10.40.3.1/24 --mtu=1450');
  assert.equal(d.source, path.join(dir, 'subnet.env'));
  assert.equal(formatDockerOpts(await dockerOpts({ api: noAgent, stateDir: dir, network: 'blue' })), '--bip=10.60.9.1/24 --mtu=1400');
  const r = await cli(['docker-opts', '--api', noAgent, '--state-dir', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '--bip=10.40.3.1/24 --mtu=1450\n');
  const empty = path.join(dir, 'empty');
  await mkdir(empty);
  const f = await cli(['docker-opts', '--api', noAgent, '--state-dir', empty]);
  assert.notEqual(f.code, 0);
  assert.equal(f.stdout, '');
  assert.match(f.stderr, /^weft: no weft agent at .*none\.sock and no subnet\.env in .*empty \(start 'weft agent', or pass --api SOCK \/ --state-dir DIR\)\n$/);
});
