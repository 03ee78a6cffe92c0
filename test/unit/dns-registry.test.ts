import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createNetwork } from '../../src/config/registry.js';
import { listRecords, registerEndpointName, removeHostRecords, removeRecords, syncHostRecords, unregisterEndpointName, putRecord } from '../../src/dns/registry.js';
import { pruneNetnsResolvConfs, removeNetnsResolvConf, writeNetnsResolvConf } from '../../src/dns/resolv-conf.js';
import { parseUpstream, upstreamsFromResolvConf } from '../../src/dns/upstream.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { weftInProcess } from '../helpers/cli.js';

/** DNS records in the store (SQLite in a temp dir), the `weft dns-*` commands (in-process), resolv.conf files. */

describe('dns registry', () => {
  let dir: string;
  let url: string;
  let store: Store;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-dns-reg-'));
    url = `sqlite://${path.join(dir, 'weft.db')}`;
    store = await openStore(url, { create: true });
    await createNetwork(store, 'blue', { Network: '10.5.0.0/16', Backend: { Type: 'host-gw' } });
  });
  after(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const names = async () => (await listRecords(store, 'blue')).map((r) => `${r.name}=${r.ip}@${r.hostId ?? 'manual'}`);

  test('a host removes only its own record; dead hosts are cleaned; resync follows the endpoints', async () => {
    await registerEndpointName(store, 'blue', 'web', '10.5.1.2/24', 'h1', 'ct1');
    await registerEndpointName(store, 'blue', 'web', '10.5.2.2', 'h2');
    await registerEndpointName(store, 'blue', 'old', '10.5.2.3', 'h2');
    assert.equal(await unregisterEndpointName(store, 'blue', 'web', '10.5.2.2', 'h1'), false, 'not h1\'s record');
    assert.equal(await unregisterEndpointName(store, 'blue', 'WEB', '10.5.1.2/24', 'h1'), true);
    assert.deepEqual(await names(), ['old=10.5.2.3@h2', 'web=10.5.2.2@h2']);
    // h2 restarts: its endpoints say web → 10.5.2.2 and new → 10.5.2.4; "old" was detached while it was down
    assert.deepEqual(await syncHostRecords(store, 'blue', 'h2', [{ name: 'web', ip: '10.5.2.2' }, { name: 'new', ip: '10.5.2.4' }]), { added: 1, removed: 1 });
    assert.deepEqual(await names(), ['new=10.5.2.4@h2', 'web=10.5.2.2@h2']);
    await putRecord(store, 'blue', { name: 'ext', ip: '10.5.9.9', source: 'manual' });
    assert.equal(await removeHostRecords(store, 'blue', 'h2'), 2);
    assert.deepEqual(await names(), ['ext=10.5.9.9@manual']);
    await assert.rejects(registerEndpointName(store, 'blue', 'bad/name', '10.5.1.1', 'h1'), /invalid DNS name/);
    await assert.rejects(putRecord(store, 'blue', { name: 'x', ip: '10.5.1', source: 'manual' }), /invalid address/);
    assert.equal((await removeRecords(store, 'blue', 'ext')).length, 1);
  });

  test('weft dns-add / dns-lookup / dns-remove', async () => {
    const weft = (...args: string[]) => weftInProcess([...args, '--store', url]);
    let r = await weft('dns-add', 'db.weft.local', '10.5.3.3');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'db.weft.local → 10.5.3.3 (network blue)\n');
    assert.equal((await weft('dns-add', 'db', '10.5.3.4')).code, 0);
    r = await weft('dns-lookup', 'db', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as Array<{ ip: string; source: string }>).map((x) => `${x.ip}/${x.source}`), ['10.5.3.3/manual', '10.5.3.4/manual']);
    r = await weft('dns-lookup', 'db');
    assert.match(r.stdout, /^NAME\s+IP\s+NETWORK/);
    assert.match(r.stdout, /db\.weft\.local\s+10\.5\.3\.4\s+blue/);
    r = await weft('dns-remove', 'db', '10.5.3.3');
    assert.equal(r.stdout, 'removed db → 10.5.3.3 (network blue)\n');
    assert.equal((await weft('dns-remove', 'db')).code, 0);
    r = await weft('dns-lookup', 'db');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'weft: db.weft.local: no such name\n');
    r = await weft('dns-add', 'x', 'not-an-ip');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid address "not-an-ip"/);
    r = await weft('dns-add', 'x', '10.5.3.3', '--network', 'nope');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nope/);
  });
});

describe('resolv.conf of named namespaces', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-netns-etc-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('written 0644 for weft, replaced only when weft wrote it, removed only by the network that wrote it', () => {
    const file = path.join(dir, 'ct1', 'resolv.conf');
    assert.equal(writeNetnsResolvConf('ct1', '10.5.1.1', 'weft.local', { dir }), true);
    assert.equal(fs.statSync(file).mode & 0o777, 0o644);
    // a second network keeps the first one's file; the default-route network replaces it
    assert.equal(writeNetnsResolvConf('ct1', '10.6.1.1', 'weft.local', { dir, replace: false }), false);
    assert.equal(removeNetnsResolvConf('ct1', '10.6.1.1', { dir }), false, 'another network\'s gateway');
    assert.equal(removeNetnsResolvConf('ct1', '10.5.1.1', { dir }), true);
    assert.equal(fs.existsSync(path.join(dir, 'ct1')), false, 'empty directory removed');
    // someone else's file is never touched
    fs.mkdirSync(path.join(dir, 'ct2'));
    fs.writeFileSync(path.join(dir, 'ct2', 'resolv.conf'), 'nameserver 192.0.2.53\n');
    assert.equal(writeNetnsResolvConf('ct2', '10.5.1.1', 'weft.local', { dir }), false);
    assert.equal(removeNetnsResolvConf('ct2', '192.0.2.53', { dir }), false);
    assert.equal(fs.readFileSync(path.join(dir, 'ct2', 'resolv.conf'), 'utf8'), 'nameserver 192.0.2.53\n');
    assert.equal(writeNetnsResolvConf('../evil', '10.5.1.1', 'weft.local', { dir }), false);
  });

  test('weft\'s files of namespaces that are gone are pruned; live ones and foreign files stay', () => {
    const etc = path.join(dir, 'prune-etc');
    const run = path.join(dir, 'prune-run');
    fs.mkdirSync(run, { recursive: true });
    fs.writeFileSync(path.join(run, 'alive'), '');
    for (const n of ['alive', 'gone']) writeNetnsResolvConf(n, '10.5.1.1', 'weft.local', { dir: etc });
    fs.mkdirSync(path.join(etc, 'foreign'));
    fs.writeFileSync(path.join(etc, 'foreign', 'resolv.conf'), 'nameserver 192.0.2.53\n');
    assert.deepEqual(pruneNetnsResolvConfs({ dir: etc, netnsDir: run }), ['gone']);
    assert.deepEqual(fs.readdirSync(etc).sort(), ['alive', 'foreign']);
    assert.deepEqual(pruneNetnsResolvConfs({ dir: path.join(dir, 'nothing-here'), netnsDir: run }), []);
  });

  test('upstreams from resolv.conf skip the gateway, IPv6 and duplicates', () => {
    const text = '# x\nnameserver 10.5.1.1\nnameserver 192.0.2.53\nnameserver ::1\n nameserver 192.0.2.53\nsearch a\nnameserver 198.51.100.1 # c\n';
    assert.deepEqual(upstreamsFromResolvConf(text, ['10.5.1.1']), [{ ip: '192.0.2.53', port: 53 }, { ip: '198.51.100.1', port: 53 }]);
    assert.deepEqual(parseUpstream('127.0.0.1:5353'), { ip: '127.0.0.1', port: 5353 });
    assert.throws(() => parseUpstream('localhost'), /invalid DNS upstream/);
    assert.throws(() => parseUpstream('1.2.3.4:70000'), /invalid DNS upstream/);
  });
});
