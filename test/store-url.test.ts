/** openStore / parseStoreUrl: URL forms, defaults, flannel layout detection, errors. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { DEFAULT_STORE_URL, openStore, parseStoreUrl } from '../src/store/index.js';
import { WeftError } from '../src/util/errors.js';

describe('parseStoreUrl', () => {
  it('sqlite:///abs/path', () => {
    assert.deepEqual(parseStoreUrl('sqlite:///var/lib/weft/weft.db'), { kind: 'sqlite', path: '/var/lib/weft/weft.db' });
    assert.equal(DEFAULT_STORE_URL, 'sqlite:///var/lib/weft/weft.db');
  });

  it('etcd hosts, default port and prefix', () => {
    assert.deepEqual(parseStoreUrl('etcd://10.0.0.1:2379,etcd-b:2380'), {
      kind: 'etcd',
      endpoints: ['http://10.0.0.1:2379', 'http://etcd-b:2380'],
      prefix: '/weft',
      flannelLayout: false,
    });
    assert.deepEqual(parseStoreUrl('etcd://localhost'), {
      kind: 'etcd',
      endpoints: ['http://localhost:2379'],
      prefix: '/weft',
      flannelLayout: false,
    });
    const v6 = parseStoreUrl('etcd://[::1]:12379/');
    assert.ok(v6.kind === 'etcd');
    assert.deepEqual(v6.endpoints, ['http://[::1]:12379']);
    assert.equal(v6.prefix, '/weft');
  });

  it('etcd prefix and flannel layout detection', () => {
    const f = parseStoreUrl('etcd://127.0.0.1:2379/coreos.com/network');
    assert.ok(f.kind === 'etcd');
    assert.equal(f.prefix, '/coreos.com/network');
    assert.equal(f.flannelLayout, true);
    const slash = parseStoreUrl('etcd://127.0.0.1:2379/coreos.com/network/');
    assert.ok(slash.kind === 'etcd');
    assert.equal(slash.prefix, '/coreos.com/network');
    assert.equal(slash.flannelLayout, true);
    const other = parseStoreUrl('etcd://127.0.0.1:2379/example.org/network');
    assert.ok(other.kind === 'etcd' && other.flannelLayout);
    for (const notFlannel of ['etcd://h/weft', 'etcd://h/coreos.com/networks', 'etcd://h/mynetwork', 'etcd://h/network/x']) {
      const p = parseStoreUrl(notFlannel);
      assert.ok(p.kind === 'etcd' && !p.flannelLayout, notFlannel);
    }
  });

  it('bad URLs: WeftError naming the URL and the accepted forms', () => {
    const bad = [
      'mysql://db/weft',
      'weft.db',
      '/var/lib/weft/weft.db',
      'sqlite://relative.db',
      'sqlite:///',
      'sqlite:///var/lib/weft/',
      'etcd://',
      'etcd:///prefix',
      'etcd://host:99999',
      'etcd://host:port',
      'etcd://a:1,,b:2',
    ];
    for (const url of bad) {
      assert.throws(
        () => parseStoreUrl(url),
        (err: unknown) => {
          assert.ok(err instanceof WeftError, `${url}: ${String(err)}`);
          assert.ok(err.message.includes(`"${url}"`), err.message);
          assert.match(err.message, /sqlite:\/\/\/.*etcd:\/\/host:port/);
          assert.doesNotMatch(err.message, /\n/, 'one line');
          return true;
        },
        url,
      );
    }
  });
});

describe('openStore', () => {
  let dir = '';
  const savedEnv = process.env.WEFT_STORE;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'weft-store-url-'));
  });
  after(() => {
    if (savedEnv === undefined) delete process.env.WEFT_STORE;
    else process.env.WEFT_STORE = savedEnv;
    rmSync(dir, { recursive: true, force: true });
  });

  it('sqlite: with create, creates the parent directory; url as given; no flannel layout', async () => {
    const url = `sqlite://${dir}/a/b/weft.db`;
    const s = await openStore(url, { create: true });
    try {
      assert.equal(s.url, url);
      assert.equal(s.flannelLayout, false);
      assert.ok(existsSync(join(dir, 'a/b/weft.db')));
      await s.put('k', 'v');
      assert.equal((await s.get('k'))?.value, 'v');
    } finally {
      await s.close();
    }
  });

  it('no URL: uses $WEFT_STORE', async () => {
    process.env.WEFT_STORE = `sqlite://${dir}/env/weft.db`;
    const s = await openStore(undefined, { create: true });
    try {
      assert.equal(s.url, process.env.WEFT_STORE);
      assert.ok(existsSync(join(dir, 'env/weft.db')));
    } finally {
      await s.close();
    }
  });

  it('etcd: flannelLayout from the prefix (the client connects lazily)', async () => {
    const f = await openStore('etcd://127.0.0.1:1/coreos.com/network');
    const w = await openStore('etcd://127.0.0.1:1');
    try {
      assert.equal(f.flannelLayout, true);
      assert.equal(f.url, 'etcd://127.0.0.1:1/coreos.com/network');
      assert.equal(w.flannelLayout, false);
    } finally {
      await f.close();
      await w.close();
    }
  });

  it('bad URL rejects with WeftError; unopenable sqlite path too', async () => {
    await assert.rejects(openStore('redis://x'), (err: unknown) => err instanceof WeftError && /redis:\/\/x/.test(err.message));
    // parent "directory" is a regular file
    writeFileSync(join(dir, 'plain-file'), '');
    const url = `sqlite://${dir}/plain-file/sub/weft.db`;
    await assert.rejects(openStore(url), (err: unknown) => err instanceof WeftError && err.message.includes(url));
  });

  it('a sqlite open does not load etcd3', async () => {
    const mod = new URL('../src/store/index.js', import.meta.url).href;
    const code = `
      import { createRequire } from 'node:module';
      const { openStore } = await import(${JSON.stringify(mod)});
      const s = await openStore(process.argv[1], { create: true });
      await s.close();
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('/node_modules/etcd3/'));
      console.log(JSON.stringify(loaded.length));`;
    const run = (url: string) =>
      promisify(execFile)(process.execPath, ['--input-type=module', '-e', code, url]).then((r) => JSON.parse(r.stdout) as number);
    assert.equal(await run(`sqlite://${dir}/lazy.db`), 0);
    // and the check can see etcd3 when it is loaded
    assert.ok((await run('etcd://127.0.0.1:1')) > 0);
  });
});
