import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { KernelWatch, isNftCommand } from '../../src/system/kernel-watch.js';
import { NETLINK_BINARY } from '../../src/system/netlink.js';
import { waitFor } from '../../src/testbed/wait.js';

/** A watch fed by hand (onData), as if its helper had printed these lines. */
function fed(nftRules = true): KernelWatch {
  return new KernelWatch('/nonexistent', () => nftRules);
}

test('no token before the helper says ready; then tokens change only with their own kinds', () => {
  const w = fed();
  assert.equal(w.token(['route']), undefined, 'not ready: read the kernel');
  w.onData('ready\n');
  const route = w.token(['route']);
  const nft = w.token(['nft']);
  assert.ok(route && nft);
  assert.equal(w.token(['route']), route, 'nothing happened: same token');
  w.onData('link\naddr\n');
  assert.equal(w.token(['route']), route, 'a link or address change is not a route change');
  assert.notEqual(w.token(['route', 'link']), `${route}`, 'but it is one for a reader of links');
  w.onData('rou');
  assert.equal(w.token(['route']), route, 'half a line counts for nothing yet');
  w.onData('te\n');
  assert.notEqual(w.token(['route']), route, 'a route change');
  assert.equal(w.token(['nft']), nft);
  w.onData('nft\n');
  assert.notEqual(w.token(['nft']), nft, 'a rule change');
});

test('neighbour changes per interface; "neigh *" (too many, or lost messages) counts for every interface', () => {
  const w = fed();
  w.onData('ready\n');
  const on5 = w.token(['neigh:5']);
  const any = w.token(['neigh']);
  w.onData('neigh 2 3\n');
  assert.equal(w.token(['neigh:5']), on5, 'other interfaces');
  assert.notEqual(w.token(['neigh']), any);
  w.onData('neigh 5\n');
  const after5 = w.token(['neigh:5']);
  assert.notEqual(after5, on5);
  w.onData('neigh *\n');
  assert.notEqual(w.token(['neigh:5']), after5, 'unknown interfaces include this one');
});

test('nft is not watchable when the helper could not join its group or iptables/ebtables are not the nf_tables variants', () => {
  const a = fed();
  a.onData('ready nonft\n');
  assert.equal(a.token(['nft']), undefined);
  assert.ok(a.token(['route']));
  const b = fed(false);
  b.onData('ready\n');
  assert.equal(b.token(['nft']), undefined, 'legacy iptables: its changes are no nf_tables events');
  assert.equal(b.token(['route', 'nft']), undefined, 'a token over several kinds needs every one watchable');
  assert.equal(b.token(['bogus']), undefined, 'unknown kinds are never watchable');
});

test('isNftCommand follows the command on PATH to what it links to', () => {
  const dir = fs.mkdtempSync('/tmp/weft-kw-');
  try {
    fs.writeFileSync(`${dir}/xtables-nft-multi`, '');
    fs.writeFileSync(`${dir}/xtables-legacy-multi`, '');
    fs.mkdirSync(`${dir}/a`);
    fs.mkdirSync(`${dir}/b`);
    fs.symlinkSync(`${dir}/xtables-nft-multi`, `${dir}/a/iptables`);
    fs.symlinkSync(`${dir}/xtables-legacy-multi`, `${dir}/b/iptables`);
    assert.equal(isNftCommand('iptables', `${dir}/a`), true);
    assert.equal(isNftCommand('iptables', `${dir}/b:${dir}/a`), false, 'the first on PATH is the one run');
    assert.equal(isNftCommand('ebtables', `${dir}/a`), false, 'missing');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the real helper: ready, then a token until stopped; a stopped watch gives none', { skip: !fs.existsSync(NETLINK_BINARY) && 'weft-netlink is not built' }, async () => {
  const w = new KernelWatch();
  w.start();
  try {
    await waitFor('the monitor is ready', 10_000, async () => w.token(['route', 'link']) !== undefined);
    const t = w.token(['route', 'link'])!;
    w.stop();
    assert.equal(w.token(['route', 'link']), undefined);
    w.start();
    await waitFor('ready again', 10_000, async () => w.token(['route', 'link']) !== undefined);
    assert.notEqual(w.token(['route', 'link']), t, 'a new helper is a new epoch: no token from before matches');
  } finally {
    w.stop();
  }
});
