/**
 * `weft network create` refuses ranges containers cannot use, backends that are not implemented and a
 * second default network. No root needed (SQLite store in a temp dir; the CLI runs in-process).
 */
import '../../src/backends/all.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { weftInProcess } from '../helpers/cli.js';

test('reserved ranges, unimplemented backends and a second default network are refused', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ranges-'));
  const store = `sqlite://${path.join(dir, 'weft.db')}`;
  const weft = (...args: string[]) => weftInProcess([...args, '--store', store]);
  try {
    const refused: Array<[string, RegExp]> = [
      ['127.0.0.0/16', /overlaps 127\.0\.0\.0\/8 \(loopback\)/],
      ['224.0.0.0/16', /overlaps 224\.0\.0\.0\/4 \(multicast\)/],
      ['0.0.0.0/0', /overlaps 0\.0\.0\.0\/8 \("this network"\)/],
      ['0.0.0.0/16', /overlaps 0\.0\.0\.0\/8/],
      ['128.0.0.0/1', /overlaps 169\.254\.0\.0\/16 \(link-local\)/],
      ['169.254.0.0/16', /link-local/],
      ['240.0.0.0/8', /overlaps 240\.0\.0\.0\/4 \(reserved/],
      ['255.255.255.0/28', /overlaps 240\.0\.0\.0\/4 \(reserved \(class E, with the broadcast address/],
    ];
    for (const [cidr, why] of refused) {
      const r = await weft('network', 'create', 'x', '--subnet', cidr);
      assert.equal(r.code, 1, `${cidr} was accepted: ${r.stdout}`);
      assert.ok(r.stderr.startsWith(`weft: network ${cidr} overlaps `), r.stderr);
      assert.match(r.stderr, why);
      assert.match(r.stderr, /pick a private range such as 10\.0\.0\.0\/8/);
    }
    const none = await weft('network', 'create', 'x', '--subnet', '10.9.0.0/16', '--backend', 'frobnicate');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /^weft: unknown backend type "frobnicate" \(this weft has: host-gw, vxlan[^)]*\)\n$/);
    const ls = await weft('network', 'ls', '--json');
    assert.deepEqual(JSON.parse(ls.stdout), [], 'nothing was stored');

    const a = await weft('network', 'create', 'a', '--subnet', '10.9.0.0/16', '--default', '--json');
    assert.equal(a.code, 0, a.stderr);
    assert.equal(JSON.parse(a.stdout).config.Default, true);
    const b = await weft('network', 'create', 'b', '--subnet', '10.10.0.0/16', '--default');
    assert.equal(b.code, 1);
    assert.match(b.stderr, /^weft: network "a" is already the default; create this one without --default\n$/);
    assert.equal((await weft('network', 'create', 'b', '--subnet', '10.10.0.0/16')).code, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
