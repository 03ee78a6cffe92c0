import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import dnsPacket, { type Packet } from 'dns-packet';
import { answerQuery, encodeReply, formErrFor, reverseIp, reverseName, udpLimit, type AnswerOptions } from '../../src/dns/answer.js';
import { normalizeName, RecordCache, type DnsRecord } from '../../src/dns/records.js';
import { NetworkKeys } from '../../src/store/layout.js';
import type { Entry } from '../../src/store/types.js';

/** The record cache and the answer logic, fed with store events directly (no store, no sockets). */

const keys = new NetworkKeys('blue', false);
let rev = 0;
const entry = (r: DnsRecord, key = keys.dnsRecord(r.name, r.ip)): Entry => ({ key, value: JSON.stringify(r), revision: ++rev });
const rec = (name: string, ip: string, hostId?: string): DnsRecord => ({ name, ip, source: hostId ? 'endpoint' : 'manual', ...(hostId ? { hostId } : {}) });

function cacheWith(...records: DnsRecord[]): RecordCache {
  const c = new RecordCache(keys);
  c.apply({ type: 'resync', entries: records.map((r) => entry(r)) });
  return c;
}

const opts: AnswerOptions = { domain: 'weft.local', ttl: 30, network: '10.5.0.0/16', canForward: true };
const RD = dnsPacket.RECURSION_DESIRED;

function ask(name: string, type: 'A' | 'AAAA' | 'PTR' | 'MX' = 'A', extra: Partial<Packet> = {}): Packet {
  return { type: 'query', id: 4242, flags: RD, questions: [{ type, name, class: 'IN' }], ...extra };
}

/** A decoded answer as dns-packet gives it (its typings lack rcode and the answers' fields). */
interface Wire {
  id: number;
  type: string;
  rcode: string;
  flag_aa: boolean;
  flag_rd: boolean;
  flag_ra: boolean;
  flag_tc: boolean;
  answers: Array<{ type: string; name: string; ttl: number; data: unknown }>;
}
const dec = (b: Buffer) => dnsPacket.decode(b) as unknown as Wire;

/** Runs the answer through the wire format, as a client would see it. */
function wire(p: Packet): Wire {
  return dec(encodeReply(p));
}

function answered(c: RecordCache, q: Packet, o = opts, turn = 0) {
  const out = answerQuery(dnsPacket.decode(dnsPacket.encode(q)), c, o, turn);
  assert.ok('reply' in out, `answered, not forwarded: ${JSON.stringify(q.questions)}`);
  return wire(out.reply);
}

describe('dns record cache', () => {
  test('follows resync, put and delete events', () => {
    const c = cacheWith(rec('web', '10.5.1.2', 'h1'), rec('db', '10.5.2.2', 'h2'));
    assert.deepEqual(c.addresses('web'), ['10.5.1.2']);
    c.apply({ type: 'put', entry: entry(rec('web', '10.5.2.9', 'h2')) });
    assert.deepEqual(c.addresses('web'), ['10.5.1.2', '10.5.2.9']);
    c.apply({ type: 'delete', key: keys.dnsRecord('web', '10.5.1.2') });
    assert.deepEqual(c.addresses('web'), ['10.5.2.9']);
    assert.deepEqual(c.names('10.5.2.2'), ['db']);
    c.apply({ type: 'resync', entries: [entry(rec('api', '10.5.3.3'))] });
    assert.deepEqual(c.addresses('web'), []);
    assert.deepEqual(c.addresses('api'), ['10.5.3.3']);
  });

  test('ignores values another client wrote that are not records, or disagree with their key', () => {
    const c = new RecordCache(keys);
    c.apply({
      type: 'resync',
      entries: [
        { key: keys.dnsRecord('bad', '10.5.1.1'), value: '{not json', revision: 1 },
        { key: keys.dnsRecord('bad', '10.5.1.2'), value: JSON.stringify({ name: 'bad', ip: '10.5.1.2' }), revision: 2 }, // no source
        entry(rec('other', '10.5.1.3'), keys.dnsRecord('bad', '10.5.1.3')), // name ≠ key
        entry(rec('bad', '10.5.1.9'), keys.dnsRecord('bad', '10.5.1.4')), // ip ≠ key
        entry({ ...rec('bad', '10.5.1.5'), ip: '999.1.1.1' }, keys.dnsRecord('bad', '999.1.1.1')),
        { key: `${keys.dnsPrefix}bad/10.5.1.6/extra`, value: JSON.stringify(rec('bad', '10.5.1.6')), revision: 3 },
        entry(rec('good', '10.5.1.7')),
      ],
    });
    assert.deepEqual(c.addresses('bad'), []);
    assert.deepEqual(c.records().map((r) => r.name), ['good']);
  });

  test('hides the records of hosts without a live lease; manual records stay', () => {
    const c = cacheWith(rec('web', '10.5.1.2', 'h1'), rec('web', '10.5.2.2', 'h2'), rec('ext', '10.5.9.9'));
    c.setLiveHosts(new Set(['h1']));
    assert.deepEqual(c.addresses('web'), ['10.5.1.2']);
    assert.deepEqual(c.names('10.5.2.2'), []);
    assert.deepEqual(c.addresses('ext'), ['10.5.9.9']);
    c.setLiveHosts(new Set(['h1', 'h2']));
    assert.deepEqual(c.addresses('web'), ['10.5.1.2', '10.5.2.2']);
  });

  test('names are normalised to lower case and checked', () => {
    assert.equal(normalizeName('Web.Prod.'), 'web.prod');
    assert.equal(normalizeName('my_app-1'), 'my_app-1');
    for (const bad of ['', 'a/b', '-web', 'web-', 'a..b', 'x'.repeat(64), 'sp ace', 'ünï']) assert.throws(() => normalizeName(bad), /invalid DNS name/, bad);
  });
});

describe('dns answers', () => {
  const c = cacheWith(rec('web', '10.5.1.2', 'h1'), rec('web', '10.5.2.3', 'h2'), rec('web', '10.5.3.4', 'h3'), rec('db', '10.5.2.7', 'h2'));

  test('A for <name>.<domain>: authoritative, the TTL, the id and RD echoed, every address', () => {
    const r = answered(c, ask('db.weft.local'));
    assert.equal(r.type, 'response');
    assert.equal(r.id, 4242);
    assert.equal(r.rcode, 'NOERROR');
    assert.equal(r.flag_aa, true);
    assert.equal(r.flag_rd, true);
    assert.deepEqual(r.answers?.map((a) => [a.type, a.name, a.ttl, a.data]), [['A', 'db.weft.local', 30, '10.5.2.7']]);
  });

  test('case-insensitive, trailing dot allowed', () => {
    const r = answered(c, ask('DB.Weft.Local.'));
    assert.deepEqual(r.answers?.map((a) => a.data), ['10.5.2.7']);
  });

  test('several containers with one name: every address, the order rotating (round-robin)', () => {
    const firsts = new Set<string>();
    for (let turn = 0; turn < 3; turn++) {
      const r = answered(c, ask('web.weft.local'), opts, turn);
      const ips = r.answers!.map((a) => a.data as string);
      assert.deepEqual([...ips].sort(), ['10.5.1.2', '10.5.2.3', '10.5.3.4']);
      firsts.add(ips[0]!);
    }
    assert.equal(firsts.size, 3);
  });

  test('unknown weft name: NXDOMAIN; known name, other type: NOERROR without answers', () => {
    assert.equal(answered(c, ask('nope.weft.local')).rcode, 'NXDOMAIN');
    assert.equal(answered(c, ask('nope.weft.local', 'AAAA')).rcode, 'NXDOMAIN');
    const aaaa = answered(c, ask('web.weft.local', 'AAAA'));
    assert.equal(aaaa.rcode, 'NOERROR');
    assert.deepEqual(aaaa.answers, []);
    assert.equal(answered(c, ask('weft.local')).rcode, 'NOERROR');
  });

  test('another domain set by the agent', () => {
    const o = { ...opts, domain: 'cluster.internal' };
    assert.deepEqual(answered(c, ask('db.cluster.internal'), o).answers?.map((a) => a.data), ['10.5.2.7']);
    assert.ok('forward' in answerQuery(ask('db.weft.local'), c, o));
  });

  test('PTR: the names of an address; NXDOMAIN inside the network; forwarded outside', () => {
    const r = answered(c, ask(reverseName('10.5.2.7'), 'PTR'));
    assert.deepEqual(r.answers?.map((a) => [a.type, a.data]), [['PTR', 'db.weft.local']]);
    assert.equal(answered(c, ask(reverseName('10.5.8.8'), 'PTR')).rcode, 'NXDOMAIN');
    assert.ok('forward' in answerQuery(ask(reverseName('192.0.2.1'), 'PTR'), c, opts));
  });

  test('other names are forwarded, or REFUSED when there is no upstream', () => {
    assert.ok('forward' in answerQuery(ask('example.org'), c, opts));
    const r = answered(c, ask('example.org'), { ...opts, canForward: false });
    assert.equal(r.rcode, 'REFUSED');
    assert.equal(r.flag_ra, false);
  });

  test('a bare known name is answered (clients without the search list); an unknown one forwarded', () => {
    assert.deepEqual(answered(c, ask('db')).answers?.map((a) => a.data), ['10.5.2.7']);
    assert.ok('forward' in answerQuery(ask('nothere'), c, opts));
  });

  test('queries that are not one plain question: FORMERR / NOTIMP', () => {
    const two: Packet = { type: 'query', id: 7, questions: [{ type: 'A', name: 'web.weft.local' }, { type: 'A', name: 'db.weft.local' }] };
    assert.equal(answered(c, two).rcode, 'FORMERR');
    assert.equal(answered(c, { type: 'query', id: 7, questions: [] }).rcode, 'FORMERR');
    const resp = answerQuery({ type: 'response', id: 7, questions: [{ type: 'A', name: 'web.weft.local' }] }, c, opts);
    assert.ok('reply' in resp && (resp.reply.flags! & 0xf) === 1);
    const notify = dnsPacket.decode(dnsPacket.encode(ask('web.weft.local')));
    (notify as { opcode?: string }).opcode = 'NOTIFY';
    const out = answerQuery(notify, c, opts);
    assert.ok('reply' in out && (out.reply.flags! & 0xf) === 4);
  });

  test('an answer larger than the UDP limit is sent truncated (TC) without answers', () => {
    // dns-packet does not compress names: 30 answers take ~900 bytes
    const many = cacheWith(...Array.from({ length: 30 }, (_, i) => rec('big', `10.5.4.${i + 2}`)));
    const q = ask('big.weft.local');
    const out = answerQuery(q, many, opts);
    assert.ok('reply' in out);
    const udp = dec(encodeReply(out.reply, udpLimit(q)));
    assert.equal(udp.flag_tc, true);
    assert.deepEqual(udp.answers, []);
    assert.equal(dec(encodeReply(out.reply)).answers.length, 30);
    // EDNS lets the client take more (up to 1232 bytes)
    const edns = ask('big.weft.local', 'A', { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096 } as never] });
    assert.equal(udpLimit(edns), 1232);
    assert.equal(dec(encodeReply(out.reply, udpLimit(edns))).answers.length, 30);
  });

  test('FORMERR for a garbled query keeps its id; nothing for short packets or responses', () => {
    const raw = Buffer.from([0x12, 0x34, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 1, 2]);
    const f = formErrFor(raw)!;
    assert.equal(f.readUInt16BE(0), 0x1234);
    assert.equal(dec(f).rcode, 'FORMERR');
    assert.equal(formErrFor(Buffer.from([1, 2, 3])), undefined);
    assert.equal(formErrFor(Buffer.from([0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0])), undefined);
  });
});

test('reverseIp: four decimal labels under in-addr.arpa, reversed; anything else is no address', () => {
  assert.equal(reverseIp('7.2.5.10.in-addr.arpa'), '10.5.2.7');
  assert.equal(reverseIp(reverseName('192.168.0.1')), '192.168.0.1');
  for (const bad of ['2.5.10.in-addr.arpa', '1.7.2.5.10.in-addr.arpa', '7.2.5.256.in-addr.arpa', '07.2.5.10.in-addr.arpa', 'x.2.5.10.in-addr.arpa', '7.2.5.10.in-addr.arpa.x', '7.2.5.10'])
    assert.equal(reverseIp(bad), undefined, bad);
});
