import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AgentDockerOps, type AgentLike } from '../../src/adapters/docker/agent-ops.js';
import { DockerAnswerError, DockerApi } from '../../src/adapters/docker/docker-api.js';
import { dockerEndpointSource } from '../../src/adapters/docker/endpoint-source.js';
import { DockerPlugin, type DockerBackendOps, type EndpointNames } from '../../src/adapters/docker/plugin.js';
import { createNetwork } from '../../src/config/registry.js';
import { listRecords, registerEndpointName } from '../../src/dns/registry.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { waitFor } from '../../src/testbed/wait.js';
import { MemoryState } from '../helpers/docker-fakes.js';

/**
 * Docker containers' names as DNS records: the Docker API lookup of an endpoint's container against a fake
 * dockerd on a unix socket (answers validated, timeouts), the plugin's background lookup after Join (never
 * holding up Docker's call), and the agent ops' records in the store.
 */

const NET_ID = 'a'.repeat(64);
const EP = 'e'.repeat(64);
const CID = 'c0ffee'.repeat(10) + 'c0ff';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A fake dockerd: `handler` answers every request; `paths` records what was asked. */
class FakeDocker {
  readonly server: http.Server;
  readonly paths: string[] = [];
  handler: Handler = (_req, res) => json(res, 404, { message: 'no such thing' });
  constructor(readonly socket: string) {
    this.server = http.createServer((req, res) => {
      this.paths.push(req.url ?? '');
      this.handler(req, res);
    });
  }
  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.socket, () => r()));
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Docker 20.10's shapes: a summary in /containers/json and the container's own record. */
const summary = (o: { endpoint?: string; name?: string } = {}) => ({
  Id: CID,
  Names: [`/${o.name ?? 'web'}`],
  State: 'running',
  NetworkSettings: { Networks: { other: { EndpointID: 'f'.repeat(64), NetworkID: 'b'.repeat(64) }, prodnet: { EndpointID: o.endpoint ?? EP, NetworkID: NET_ID, Aliases: null } } },
});
const inspect = (o: { aliases?: unknown; name?: string; endpoint?: string } = {}) => ({
  Id: CID,
  Name: `/${o.name ?? 'web'}`,
  NetworkSettings: { Networks: { prodnet: { EndpointID: o.endpoint ?? EP, NetworkID: NET_ID, Aliases: o.aliases ?? ['www', CID.slice(0, 12)] } } },
});

/** Answers as dockerd does once the container has started. */
const started =
  (o: { aliases?: unknown; name?: string } = {}): Handler =>
  (req, res) => {
    const url = req.url ?? '';
    if (url.startsWith('/v1.41/containers/json')) return json(res, 200, [summary(o)]);
    if (url === `/v1.41/containers/${CID}/json`) return json(res, 200, inspect(o));
    json(res, 404, { message: `no route ${url}` });
  };

let dir: string;
before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-docker-names-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('DockerApi.containerOfEndpoint against a fake dockerd', () => {
  let fake: FakeDocker;
  let api: DockerApi;
  before(async () => {
    fake = new FakeDocker(path.join(dir, 'api.sock'));
    await fake.listen();
    api = new DockerApi(fake.socket);
  });
  after(() => fake.close());

  test('finds the container by endpoint id: its name without "/" and its aliases on that network', async () => {
    fake.handler = started();
    fake.paths.length = 0;
    assert.deepEqual(await api.containerOfEndpoint(NET_ID, EP), { id: CID, name: 'web', aliases: ['www', CID.slice(0, 12)] });
    // listed with a network filter (no container lock in dockerd), then the one container inspected
    const filters = new URL(`http://x${fake.paths[0]}`).searchParams.get('filters');
    assert.deepEqual(JSON.parse(filters!), { network: [NET_ID] });
    assert.equal(fake.paths[1], `/v1.41/containers/${CID}/json`);
  });

  test('an endpoint Docker does not list (yet) is undefined; so is a container removed before its inspect', async () => {
    fake.handler = (req, res) => json(res, 200, req.url!.startsWith('/v1.41/containers/json') ? [summary({ endpoint: 'd'.repeat(64) })] : {});
    assert.equal(await api.containerOfEndpoint(NET_ID, EP), undefined);
    fake.handler = (req, res) => (req.url!.startsWith('/v1.41/containers/json') ? json(res, 200, [summary()]) : json(res, 404, { message: 'No such container' }));
    assert.equal(await api.containerOfEndpoint(NET_ID, EP), undefined);
    // the inspect shows another endpoint on that network by now (restarted): not this endpoint's container
    fake.handler = (req, res) => json(res, 200, req.url!.startsWith('/v1.41/containers/json') ? [summary()] : inspect({ endpoint: 'd'.repeat(64) }));
    assert.equal(await api.containerOfEndpoint(NET_ID, EP), undefined);
  });

  test('answers of the wrong shape are refused naming the field', async () => {
    const cases: Array<[unknown, unknown, RegExp]> = [
      [{ not: 'a list' }, inspect(), /GET \/containers\/json: \(body\): /],
      [[{ ...summary(), Id: '../../etc' }], inspect(), /GET \/containers\/json: 0\.Id: not a container id/],
      [[{ ...summary(), Names: 'web' }], inspect(), /0\.Names: /],
      [[summary()], inspect({ aliases: 'www' }), /NetworkSettings\.Networks\.prodnet\.Aliases: /],
      [[summary()], inspect({ aliases: [7] }), /NetworkSettings\.Networks\.prodnet\.Aliases\.0: /],
      [[summary()], { ...inspect(), Id: 42 }, /Id: /],
    ];
    for (const [list, one, want] of cases) {
      fake.handler = (req, res) => json(res, 200, req.url!.startsWith('/v1.41/containers/json') ? list : one);
      await assert.rejects(api.containerOfEndpoint(NET_ID, EP), (err: Error) => err instanceof DockerAnswerError && want.test(err.message), `${JSON.stringify(list).slice(0, 60)} ${want}`);
    }
    fake.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"truncated');
    };
    await assert.rejects(api.containerOfEndpoint(NET_ID, EP), DockerAnswerError);
  });

  test('a dockerd that does not answer is an error after the timeout, not a hang', async () => {
    fake.handler = () => {
      /* never answers */
    };
    await assert.rejects(api.containerOfEndpoint(NET_ID, EP, 200), /no answer from/);
    fake.server.closeAllConnections();
  });

  test('no dockerd at all: an error (ENOENT), not a hang', async () => {
    await assert.rejects(new DockerApi(path.join(dir, 'none.sock')).containerOfEndpoint(NET_ID, EP), /ENOENT/);
  });
});


/** Ops for one network "prodnet" (10.40.1.0/24 here); names published are recorded. */
function fakeOps(lookup: DockerBackendOps['containerOfEndpoint']) {
  const published: Array<{ names: EndpointNames[]; networks?: string[] }> = [];
  let next = 2;
  const ops: DockerBackendOps = {
    async ensureNetwork() {},
    async joinNetwork(name) {
      return { name, network: '10.40.0.0/16', subnet: '10.40.1.0/24', gateway: '10.40.1.1', bridge: 'weft0', mtu: 1450 };
    },
    async allocateAddress() {
      return `10.40.1.${next++}/24`;
    },
    async releaseAddress() {},
    async createVeth(_n, req) {
      return { hostIf: `wd${req.endpointId.slice(0, 4)}`, peerIf: `wp${req.endpointId.slice(0, 4)}`, mac: req.mac };
    },
    async deleteVeth() {},
    async removeNetwork() {},
    containerOfEndpoint: lookup,
    async publishNames(names, networks) {
      published.push({ names: JSON.parse(JSON.stringify(names)) as EndpointNames[], ...(networks ? { networks } : {}) });
    },
  };
  /** The last set published for prodnet: "name=ip" strings. */
  const current = () => {
    const last = [...published].reverse().find((p) => !p.networks || p.networks.includes('prodnet'));
    return (last?.names ?? []).flatMap((e) => e.names.map((n) => `${n}=${e.ip}`)).sort();
  };
  return { ops, published, current };
}

/** A network, a pool and an endpoint, as Docker makes them for `docker run --network prodnet`. */
async function runContainer(plugin: DockerPlugin, endpoint = EP): Promise<{ ms: number }> {
  const ok = async (m: string, b: unknown) => {
    const r = await plugin.call(m, b, false);
    assert.equal(r.status, 200, `${m}: ${JSON.stringify(r.body)}`);
    return r.body as Record<string, unknown>;
  };
  if (!plugin.snapshot().pools['10.40.0.0/16']) {
    await ok('/IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.40.0.0/16', SubPool: '', Options: { 'weft.network': 'prodnet' }, V6: false });
    await ok('/NetworkDriver.CreateNetwork', { NetworkID: NET_ID, Options: {}, IPv4Data: [{ AddressSpace: 'weft', Pool: '10.40.0.0/16', Gateway: '10.40.0.1/16' }], IPv6Data: [] });
  }
  const addr = (await ok('/IpamDriver.RequestAddress', { PoolID: '10.40.0.0/16', Address: '', Options: {} })).Address as string;
  await ok('/NetworkDriver.CreateEndpoint', { NetworkID: NET_ID, EndpointID: endpoint, Interface: { Address: addr, AddressIPv6: '', MacAddress: '' }, Options: {} });
  const t0 = Date.now();
  await ok('/NetworkDriver.Join', { NetworkID: NET_ID, EndpointID: endpoint, SandboxKey: '/var/run/docker/netns/x', Options: {} });
  return { ms: Date.now() - t0 };
}

async function removeContainer(plugin: DockerPlugin, endpoint = EP): Promise<void> {
  for (const m of ['/NetworkDriver.Leave', '/NetworkDriver.DeleteEndpoint']) {
    const r = await plugin.call(m, { NetworkID: NET_ID, EndpointID: endpoint }, false);
    assert.equal(r.status, 200, `${m}: ${JSON.stringify(r.body)}`);
  }
}

describe('the Docker plugin names joined containers in the background', () => {
  const plugins: DockerPlugin[] = [];
  const start = async (ops: DockerBackendOps, state = new MemoryState(), o: { containerTimeoutMs?: number } = {}) => {
    const p = new DockerPlugin({ ops, state, socketPath: path.join(dir, `p${plugins.length}.sock`), ...o });
    plugins.push(p);
    await p.start();
    return p;
  };
  after(async () => {
    for (const p of plugins) await p.stop();
  });

  test('Join answers at once while Docker does not answer; the names follow when it does; Leave removes them', async () => {
    let release!: () => void;
    const docker = new Promise<void>((r) => (release = r));
    let asked = 0;
    const f = fakeOps(async (networkId, endpointId) => {
      asked++;
      assert.equal(networkId, NET_ID);
      assert.equal(endpointId, EP);
      await docker; // dockerd busy starting the container
      return asked < 3 ? undefined : { id: CID, name: 'Web', aliases: ['www', CID.slice(0, 12), 'bad name!'] };
    });
    const plugin = await start(f.ops);
    await runContainer(plugin); // returns although the lookup hangs
    assert.deepEqual(f.current(), [], 'no names before Docker answers');
    release();
    await waitFor('names published', 10_000, async () => f.current().length === 3 || `published ${JSON.stringify(f.current())}`);
    assert.deepEqual(f.current(), [`${CID.slice(0, 12)}=10.40.1.2`, 'web=10.40.1.2', 'www=10.40.1.2']);
    const ep = plugin.snapshot().endpoints[EP]!;
    assert.equal(ep.container, 'Web');
    assert.deepEqual(ep.dnsNames, ['web', 'www', CID.slice(0, 12)], 'saved with the endpoint (lower case; the invalid alias skipped)');
    // `weft ps` shows them
    const [listed] = await dockerEndpointSource({ hostId: 'h1', endpoints: () => plugin.endpointRecords() }).list();
    assert.deepEqual([listed?.name, listed?.aliases], ['web', ['www', CID.slice(0, 12)]]);
    await removeContainer(plugin);
    assert.deepEqual(f.current(), [], 'gone with Leave');
  });

  test('Docker down at first: retried until it answers; a container that leaves first gets no names', async () => {
    let up = false;
    let tries = 0;
    const f = fakeOps(async () => {
      tries++;
      if (!up) throw new Error('connect ENOENT /var/run/docker.sock');
      return { id: CID, name: 'api', aliases: [] };
    });
    const plugin = await start(f.ops);
    await runContainer(plugin);
    await waitFor('two failed lookups', 10_000, async () => tries >= 2);
    up = true;
    await waitFor('names after Docker comes up', 10_000, async () => f.current().join() === 'api=10.40.1.2');

    // a second container whose lookup is still pending when it leaves: nothing registered for it later
    let answer!: (v: { id: string; name: string; aliases: string[] }) => void;
    const pending = new Promise<{ id: string; name: string; aliases: string[] }>((r) => (answer = r));
    f.ops.containerOfEndpoint = async () => pending;
    const ep2 = '2'.repeat(64);
    await runContainer(plugin, ep2);
    await removeContainer(plugin, ep2);
    answer({ id: CID, name: 'late', aliases: [] });
    await plugin.stop(); // waits for the lookups under way
    assert.deepEqual(f.current(), ['api=10.40.1.2'], 'the endpoint that left got no name');
    assert.equal(plugin.snapshot().endpoints[ep2], undefined);
  });

  test('gives up after containerTimeoutMs with a log line, and the plugin stops promptly meanwhile', async () => {
    const warnings: string[] = [];
    const f = fakeOps(async () => undefined);
    const state = new MemoryState();
    const plugin = new DockerPlugin({ ops: f.ops, state, socketPath: path.join(dir, 'gu.sock'), containerTimeoutMs: 300, log: { info() {}, warn: (_o, m) => warnings.push(m ?? ''), error() {} } });
    await plugin.start();
    await runContainer(plugin);
    await waitFor('a warning', 10_000, async () => warnings.some((w) => /did not name the container/.test(w)));
    await plugin.stop();
    assert.deepEqual(f.current(), []);
  });

  test('a restarted plugin publishes the saved names again and looks up joined endpoints that have none', async () => {
    const state = new MemoryState();
    const f = fakeOps(async () => ({ id: CID, name: 'db', aliases: ['primary'] }));
    const first = await start(f.ops, state);
    await runContainer(first);
    await waitFor('named', 10_000, async () => f.current().length === 2);
    await first.stop();
    // a second endpoint joined while its lookup never finished (saved without names)
    state.state.endpoints['3'.repeat(64)] = { id: '3'.repeat(64), networkId: NET_ID, network: 'prodnet', address: '10.40.1.9/24', mac: '02:00:00:00:00:09', hostIf: 'wd3333', peerIf: 'wp3333' };
    const g = fakeOps(async (_n, endpointId) => (endpointId === EP ? { id: CID, name: 'db', aliases: ['primary'] } : { id: 'd'.repeat(64), name: 'cache', aliases: [] }));
    await start(g.ops, state);
    await waitFor('both named after the restart', 10_000, async () => g.current().join() === 'cache=10.40.1.9,db=10.40.1.2,primary=10.40.1.2' || g.current().join());
    assert.equal(g.published[0]?.networks, undefined, 'the first publish after start covers every network (stale records of removed containers go)');
  });
});

describe('AgentDockerOps.publishNames: this host\'s Docker records in the store', () => {
  let store: Store;
  before(async () => {
    store = await openStore(`sqlite://${path.join(dir, 'ops.db')}`, { create: true });
    await createNetwork(store, 'prodnet', { Network: '10.40.0.0/16', Backend: { Type: 'host-gw' } });
    await createNetwork(store, 'other', { Network: '10.41.0.0/16', Backend: { Type: 'host-gw' } });
  });
  after(() => store.close());
  const agent = (hostId: string): AgentLike => ({ store, hostId, runners: new Map(), failed: new Map(), join: async () => undefined });
  const records = async (network: string) => (await listRecords(store, network)).map((r) => `${r.name}=${r.ip}:${r.source}:${r.hostId ?? ''}:${r.container ?? ''}`).sort();

  test('adds, replaces and removes only this host\'s Docker records', async () => {
    const h1 = new AgentDockerOps(agent('h1'));
    const h2 = new AgentDockerOps(agent('h2'));
    await registerEndpointName(store, 'prodnet', 'web', '10.40.1.50', 'h1', 'netns-ct'); // an attach --name on h1: not Docker's
    await h2.publishNames([{ network: 'prodnet', ip: '10.40.2.2', names: ['web'], container: 'web' }]);
    await h1.publishNames([{ network: 'prodnet', ip: '10.40.1.2', names: ['web', 'www'], container: 'web' }]);
    assert.deepEqual(await records('prodnet'), [
      'web=10.40.1.2:docker:h1:web',
      'web=10.40.1.50:endpoint:h1:netns-ct',
      'web=10.40.2.2:docker:h2:web',
      'www=10.40.1.2:docker:h1:web',
    ]);
    // the container left: h1's Docker records of prodnet go, nothing else
    await h1.publishNames([], ['prodnet']);
    assert.deepEqual(await records('prodnet'), ['web=10.40.1.50:endpoint:h1:netns-ct', 'web=10.40.2.2:docker:h2:web']);
    // a full publish (plugin start) drops this host's Docker records in every network
    await h2.publishNames([{ network: 'other', ip: '10.41.2.2', names: ['x'], container: 'x' }], ['other']);
    await h2.publishNames([]);
    assert.deepEqual(await records('other'), []);
    assert.deepEqual(await records('prodnet'), ['web=10.40.1.50:endpoint:h1:netns-ct']);
  });

  test('containerOfEndpoint goes to the Docker API when there is one, else there is no container', async () => {
    assert.equal(await new AgentDockerOps(agent('h1')).containerOfEndpoint(NET_ID, EP), undefined);
    const fake = new FakeDocker(path.join(dir, 'ops-api.sock'));
    fake.handler = started({ aliases: ['www'] });
    await fake.listen();
    try {
      const ops = new AgentDockerOps(agent('h1'), { docker: new DockerApi(fake.socket) });
      assert.deepEqual(await ops.containerOfEndpoint(NET_ID, EP), { id: CID, name: 'web', aliases: ['www'] });
    } finally {
      await fake.close();
    }
  });
});
