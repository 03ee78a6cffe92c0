/**
 * etcd over TLS with client certificates (issue 8 #11), against a real etcd-server that serves clients
 * over TLS only and requires a certificate signed by the test CA (PKI made with openssl for this run):
 * `etcds://`, or `etcd://` plus CA/cert/key, through openStore, $WEFT_ETCD_* and the CLI's --etcd-* flags.
 * A client without a certificate, with one from another CA, or speaking plain gRPC fails within the
 * deadline with one line naming the endpoint.
 */
import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openStore, parseStoreUrl } from '../src/store/index.js';
import type { Store, WatchEvent } from '../src/store/types.js';
import { runWeft } from '../src/testbed/agents.js';
import { WeftError } from '../src/util/errors.js';
import { startEtcd, type TestEtcd } from './helpers/etcd.js';
import { haveCommand } from './helpers/require-root.js';
import { makeTestPki, type TestPki } from './helpers/tls.js';

describe('etcds:// URLs', () => {
  it('parse to https endpoints (default port 2379, prefix /weft)', () => {
    assert.deepEqual(parseStoreUrl('etcds://10.0.0.1,etcd-b:2380/coreos.com/network'), {
      kind: 'etcd',
      endpoints: ['https://10.0.0.1:2379', 'https://etcd-b:2380'],
      prefix: '/coreos.com/network',
      flannelLayout: true,
    });
    assert.throws(() => parseStoreUrl('etcds://'), WeftError);
  });

  it('a client certificate needs both files; an unreadable file is named', async () => {
    await assert.rejects(
      openStore('etcds://127.0.0.1:1', { tls: { certFile: '/nonexistent/c.pem' } }),
      (err: unknown) => err instanceof WeftError && /needs both --etcd-certfile and --etcd-keyfile/.test(err.message),
    );
    await assert.rejects(
      openStore('etcds://127.0.0.1:1', { tls: { caFile: '/nonexistent/ca.pem' } }),
      (err: unknown) => err instanceof WeftError && /cannot read --etcd-cafile \/nonexistent\/ca\.pem/.test(err.message),
    );
  });
});

const skip = !haveCommand('openssl') ? 'needs openssl' : false;

describe('etcd with TLS and client certificates', { skip }, () => {
  let dir = '';
  let pki: TestPki;
  let etcd: TestEtcd;
  let port = '';
  const savedEnv = { ...process.env };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-etcd-tls-'));
    pki = makeTestPki(dir);
    etcd = await startEtcd({ tls: { ca: pki.ca, server: pki.server, client: pki.client } });
    port = new URL(etcd.endpoint).port;
  });
  after(async () => {
    process.env = savedEnv;
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const clientTls = () => ({ caFile: pki.ca, certFile: pki.client.cert, keyFile: pki.client.key });

  async function roundTrip(s: Store, prefix: string): Promise<void> {
    const events: WatchEvent[] = [];
    const w = s.watch(prefix, (ev) => events.push(ev));
    try {
      const put = await s.put(`${prefix}a`, '1');
      assert.deepEqual(await s.get(`${prefix}a`), put);
      assert.ok(await s.compareAndSwap(`${prefix}a`, put.revision, '2'));
      assert.deepEqual((await s.list(prefix)).map((e) => e.value), ['2']);
      const deadline = Date.now() + 10_000;
      while (!events.some((ev) => ev.type === 'put' && ev.entry.value === '2')) {
        assert.ok(Date.now() < deadline, `watch saw: ${JSON.stringify(events)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      w.close();
    }
  }

  it('etcds:// with the CA and a client certificate: reads, writes, CAS and watch work', { timeout: 30_000 }, async () => {
    assert.match(etcd.url, /^etcds:\/\//);
    const s = await openStore(`${etcd.url}/tls`, { tls: clientTls() });
    try {
      await roundTrip(s, 'one/');
    } finally {
      await s.close();
    }
  });

  it('etcd:// plus TLS files from $WEFT_ETCD_* also speaks TLS', { timeout: 30_000 }, async () => {
    process.env.WEFT_ETCD_CAFILE = pki.ca;
    process.env.WEFT_ETCD_CERTFILE = pki.client.cert;
    process.env.WEFT_ETCD_KEYFILE = pki.client.key;
    try {
      const s = await openStore(`etcd://127.0.0.1:${port}/tls`);
      try {
        await roundTrip(s, 'two/');
      } finally {
        await s.close();
      }
    } finally {
      delete process.env.WEFT_ETCD_CAFILE;
      delete process.env.WEFT_ETCD_CERTFILE;
      delete process.env.WEFT_ETCD_KEYFILE;
    }
  });

  for (const [name, tls, url] of [
    ['no client certificate', () => ({ caFile: pki.ca }), () => `${etcd.url}/tls`],
    ['a client certificate from another CA', () => ({ caFile: pki.ca, certFile: pki.rogue.cert, keyFile: pki.rogue.key }), () => `${etcd.url}/tls`],
    ['plain gRPC (no TLS)', () => ({}), () => `etcd://127.0.0.1:${port}/tls`],
  ] as const) {
    it(`${name}: refused within the deadline, one line naming the endpoint`, { timeout: 30_000 }, async () => {
      const s = await openStore(url(), { tls: tls(), timeoutMs: 2000 });
      try {
        await assert.rejects(s.list(''), (err: unknown) => {
          assert.ok(err instanceof WeftError, String(err));
          assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
          assert.doesNotMatch(err.message, /\n/);
          return true;
        });
      } finally {
        await s.close();
      }
    });
  }

  it('the CLI: --etcd-cafile/--etcd-certfile/--etcd-keyfile on network create and ls', { timeout: 60_000 }, async () => {
    const env = { ...process.env };
    for (const k of ['WEFT_ETCD_CAFILE', 'WEFT_ETCD_CERTFILE', 'WEFT_ETCD_KEYFILE', 'WEFT_STORE']) delete env[k];
    const flags = ['--store', `${etcd.url}/cli`, '--etcd-cafile', pki.ca, '--etcd-certfile', pki.client.cert, '--etcd-keyfile', pki.client.key];
    const created = await runWeft(['network', 'create', 'blue', '--subnet', '10.77.0.0/16', ...flags], { env, timeoutMs: 30_000 });
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^created network blue: 10\.77\.0\.0\/16/);
    const ls = await runWeft(['network', 'ls', '--json', ...flags], { env, timeoutMs: 30_000 });
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual((JSON.parse(ls.stdout) as Array<{ name: string }>).map((n) => n.name), ['blue']);
    // without the client certificate the same command fails with one line
    const refused = await runWeft(['network', 'ls', '--store', `${etcd.url}/cli`, '--etcd-cafile', pki.ca], {
      env: { ...env, WEFT_STORE_TIMEOUT_MS: '2000' },
      timeoutMs: 30_000,
    });
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, new RegExp(`^weft: store etcds://127\\.0\\.0\\.1:${port}/cli: list .*https://127\\.0\\.0\\.1:${port}.*\\n$`));
  });
});
