import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import dnsPacket from 'dns-packet';
import fc from 'fast-check';
import { DnsService } from '../../src/dns/service.js';
import { hostRecordToJson, leaseToJson } from '../../src/lease/codec.js';
import { openStore } from '../../src/store/index.js';
import { networkKeys } from '../../src/store/layout.js';
import type { Store } from '../../src/store/types.js';
import { log } from '../../src/util/log.js';
import { waitFor } from '../../src/testbed/wait.js';

/**
 * The DNS service as the agent runs it, on 127.0.0.1 with an OS-chosen port, against an SQLite store in a
 * temp dir. The upstream is a fake resolver on loopback run by this test.
 */

const NET = 'blue';
const CIDR = '10.5.0.0/16';
const quiet = log.child({});
quiet.level = 'silent';

interface Reply {
  id: number;
  rcode: string;
  flag_tc: boolean;
  answers: Array<{ type: string; data: unknown }>;
}

function query(name: string, o: { type?: 'A' | 'PTR' | 'AAAA'; id?: number } = {}): Buffer {
  return dnsPacket.encode({ type: 'query', id: o.id ?? 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: o.type ?? 'A', name }] });
}

/** One UDP exchange on loopback; rejects after `ms`. */
function udpAsk(port: number, msg: Buffer, ms = 2000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      reject(new Error('no answer'));
    }, ms);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(dnsPacket.decode(m) as unknown as Reply);
    });
    s.send(msg, port, '127.0.0.1');
  });
}

const ips = (r: Reply) => r.answers.map((a) => a.data as string).sort();

/** A fake upstream: answers every A query with 192.0.2.10, unless `silent`. */
class FakeUpstream {
  readonly socket = dgram.createSocket('udp4');
  silent = false;
  seen = 0;
  async start(): Promise<number> {
    this.socket.on('message', (m, r) => {
      this.seen++;
      if (this.silent) return;
      const q = dnsPacket.decode(m);
      const a = dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers: [{ type: 'A', name: q.questions![0]!.name, ttl: 60, data: '192.0.2.10' }] });
      this.socket.send(a, r.port, r.address);
    });
    await new Promise<void>((res) => this.socket.bind(0, '127.0.0.1', () => res()));
    return this.socket.address().port;
  }
}

describe('dns service on loopback', () => {
  let dir: string;
  let store: Store;
  let dns: DnsService;
  let port: number;
  const upstream = new FakeUpstream();

  const putLease = async (hostId: string, subnet: string) => {
    const keys = networkKeys(store, NET);
    await store.put(keys.subnet(subnet), leaseToJson({ publicIp: '192.168.1.1', backendType: 'host-gw', backendData: {} }), { ttlSeconds: 60 });
    await store.put(keys.host(hostId), hostRecordToJson({ hostId, subnet, publicIp: '192.168.1.1', expiresAt: Date.now() + 60_000 }));
  };
  const resolves = (name: string, want: string[]) =>
    waitFor(`${name} → [${want.join(' ')}]`, 5000, async () => {
      const r = await udpAsk(port, query(name));
      return JSON.stringify(ips(r)) === JSON.stringify(want) || `got ${r.rcode} [${ips(r).join(' ')}]`;
    });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-dns-unit-'));
    store = await openStore(`sqlite://${path.join(dir, 'weft.db')}`, { create: true });
    await putLease('h1', '10.5.1.0/24');
    const up = await upstream.start();
    dns = new DnsService({ store, hostId: 'h1', log: quiet, port: 0, upstreams: [{ ip: '127.0.0.1', port: up }], forwardTimeoutMs: 300, netnsEtc: path.join(dir, 'netns') });
    await dns.startNetwork(NET, '127.0.0.1', CIDR);
    const server = dns.server(NET);
    assert.ok(server, 'server started');
    port = server.port;
  });
  after(async () => {
    await dns.stop();
    upstream.socket.close();
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('attach with a name registers it; every host sees it; detach removes it', async () => {
    const ep = { network: NET, address: '10.5.1.5/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'Web', container: 'ct1', owner: 'netns:ct1' };
    await dns.attached(ep);
    await resolves('web.weft.local', ['10.5.1.5']);
    const ptr = await udpAsk(port, query('5.1.5.10.in-addr.arpa', { type: 'PTR' }));
    assert.deepEqual(ptr.answers.map((a) => a.data), ['web.weft.local']);
    // a named namespace gets its resolv.conf pointing at the gateway
    const rc = path.join(dir, 'netns', 'ct1', 'resolv.conf');
    assert.match(fs.readFileSync(rc, 'utf8'), /^nameserver 10\.5\.1\.1$/m);
    assert.match(fs.readFileSync(rc, 'utf8'), /^search weft\.local$/m);
    assert.equal(fs.statSync(rc).mode & 0o777, 0o644);
    await dns.detached(ep);
    await waitFor('web to be gone', 5000, async () => (await udpAsk(port, query('web.weft.local'))).rcode === 'NXDOMAIN');
    assert.equal(fs.existsSync(rc), false);
  });

  test('aliases (CNI runtimeConfig.aliases) are registered and removed with the name', async () => {
    const ep = { network: NET, address: '10.5.1.31/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'pod1', aliases: ['Www', 'pod1', 'bad name'], container: '/run/netns/x' };
    await dns.attached(ep);
    await resolves('pod1.weft.local', ['10.5.1.31']);
    await resolves('www.weft.local', ['10.5.1.31']);
    await dns.detached(ep);
    for (const n of ['pod1', 'www']) await waitFor(`${n} to be gone`, 5000, async () => (await udpAsk(port, query(`${n}.weft.local`))).rcode === 'NXDOMAIN');
  });

  test('one name on several hosts: several A records; a host without a live lease is not served', async () => {
    await putLease('h2', '10.5.2.0/24');
    await dns.attached({ network: NET, address: '10.5.1.7/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'api' });
    const other = new DnsService({ store, hostId: 'h2', log: quiet });
    await other.attached({ network: NET, address: '10.5.2.7/24', gateway: '10.5.2.1', ifname: 'eth0', name: 'api' });
    await resolves('api.weft.local', ['10.5.1.7', '10.5.2.7']);
    // h2's lease and host record vanish (the host died): its record stops being served
    const keys = networkKeys(store, NET);
    await store.delete(keys.subnet('10.5.2.0/24'));
    await resolves('api.weft.local', ['10.5.1.7']);
  });

  test('a registration for another host is not removed by this host\'s detach', async () => {
    const other = new DnsService({ store, hostId: 'h3', log: quiet });
    await putLease('h3', '10.5.3.0/24');
    await other.attached({ network: NET, address: '10.5.3.9/24', gateway: '10.5.3.1', ifname: 'eth0', name: 'db' });
    await dns.detached({ network: NET, address: '10.5.3.9/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'db' });
    await resolves('db.weft.local', ['10.5.3.9']);
  });

  test('other names go to the upstream (answer and id passed back); a silent upstream gives SERVFAIL', async () => {
    const r = await udpAsk(port, query('example.org', { id: 777 }));
    assert.equal(r.id, 777);
    assert.deepEqual(ips(r), ['192.0.2.10']);
    upstream.silent = true;
    try {
      const t0 = Date.now();
      const f = await udpAsk(port, query('example.net', { id: 778 }));
      assert.equal(f.rcode, 'SERVFAIL');
      assert.equal(f.id, 778);
      assert.ok(Date.now() - t0 >= 250, 'waited for the upstream timeout');
    } finally {
      upstream.silent = false;
    }
  });

  test('answers kept for repeated questions follow changes and echo each query\'s id and case', async () => {
    await dns.attached({ network: NET, address: '10.5.1.21/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'kept' });
    await resolves('kept.weft.local', ['10.5.1.21']);
    for (const [name, id] of [['KEPT.weft.local', 11], ['kept.weft.local', 12], ['KEPT.weft.local', 13]] as const) {
      const m = await udpAsk(port, query(name, { id }));
      assert.equal(m.id, id);
      assert.equal((m as unknown as { questions: Array<{ name: string }> }).questions[0]!.name, name);
      assert.deepEqual(ips(m), ['10.5.1.21']);
    }
    await dns.detached({ network: NET, address: '10.5.1.21/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'kept' });
    await dns.attached({ network: NET, address: '10.5.1.22/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'kept' });
    await resolves('kept.weft.local', ['10.5.1.22']);
  });

  test('stopping a server while forwarded queries wait for their upstream is quiet (no late send on a closed socket)', async () => {
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
    const svc = new DnsService({ store, hostId: 'h1', log: quiet, port: 0, upstreams: [{ ip: '127.0.0.1', port: silent.address().port }], forwardTimeoutMs: 5000 });
    try {
      await svc.startNetwork(NET, '127.0.0.1', CIDR);
      const server = svc.server(NET)!;
      const c = dgram.createSocket('udp4');
      c.send(query('example.org', { id: 5 }), server.port, '127.0.0.1');
      await waitFor('the query to be forwarded', 5000, () => server.stats.forwarded >= 1, 10);
      await svc.stop();
      c.close();
      // a late send would surface here as an unhandled rejection and fail this file
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(svc.server(NET), undefined);
    } finally {
      await svc.stop();
      silent.close();
    }
  });

  test('unknown weft names: NXDOMAIN, never forwarded', async () => {
    const before = upstream.seen;
    assert.equal((await udpAsk(port, query('ghost.weft.local'))).rcode, 'NXDOMAIN');
    assert.equal(upstream.seen, before);
  });

  test('TCP: two length-prefixed queries on one connection', async () => {
    await dns.attached({ network: NET, address: '10.5.1.8/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'tcpname' });
    await resolves('tcpname.weft.local', ['10.5.1.8']);
    const frame = (b: Buffer) => Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
    const sock = net.connect(port, '127.0.0.1');
    const got: Reply[] = [];
    let buf = Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => {
      sock.on('error', reject);
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          got.push(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))) as unknown as Reply);
          buf = buf.subarray(2 + buf.readUInt16BE(0));
        }
        if (got.length === 2) resolve();
      });
      // both frames in one write, the second split across two writes
      const two = Buffer.concat([frame(query('tcpname.weft.local', { id: 1 })), frame(query('ghost.weft.local', { id: 2 }))]);
      sock.write(two.subarray(0, two.length - 5));
      setTimeout(() => sock.write(two.subarray(two.length - 5)), 20);
    });
    sock.destroy();
    const byId = new Map(got.map((g) => [g.id, g]));
    assert.deepEqual(ips(byId.get(1)!), ['10.5.1.8']);
    assert.equal(byId.get(2)!.rcode, 'NXDOMAIN');
  });

  test('random, truncated and garbled packets never crash it; it answers afterwards', async () => {
    const server = dns.server(NET)!;
    const valid = query('web.weft.local', { id: 99 });
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    const replies: Buffer[] = [];
    s.on('message', (m) => replies.push(m));
    const samples: Buffer[] = [];
    for (let cut = 0; cut < valid.length; cut++) samples.push(valid.subarray(0, cut));
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 }), (bytes, at, flip) => {
        samples.push(Buffer.from(bytes));
        const g = Buffer.from(valid);
        g[at] = flip; // one garbled byte of a valid query
        samples.push(g);
      }),
      { numRuns: 500 },
    );
    // header claiming 65535 questions/answers, compression pointer loops, an oversized datagram
    samples.push(Buffer.from([0, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    samples.push(Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]));
    samples.push(Buffer.alloc(9000, 0x41));
    const malformedBefore = server.stats.malformed;
    const queriesBefore = server.stats.queries;
    // in batches the socket buffer holds (a flood that overflows it is the e2e test's business)
    for (let i = 0; i < samples.length; i += 100) {
      for (const b of samples.slice(i, i + 100)) s.send(b, port, '127.0.0.1');
      const want = Math.min(samples.length, i + 100);
      await waitFor('every sample handled', 10_000, () => server.stats.queries - queriesBefore >= want || `${server.stats.queries - queriesBefore} of ${want}`, 5);
    }
    s.close();
    assert.ok(server.stats.malformed - malformedBefore >= valid.length - 1, 'truncations counted as malformed');
    await dns.attached({ network: NET, address: '10.5.1.9/24', gateway: '10.5.1.1', ifname: 'eth0', name: 'after' });
    await resolves('after.weft.local', ['10.5.1.9']);
    assert.ok(replies.every((r) => r.length >= 12), 'replies are DNS messages');
  });
});
