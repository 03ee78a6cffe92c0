import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseFast } from '../../src/cli/fast.js';

const argv = (...a: string[]) => ['node', 'weft', ...a];

test('the fast path takes the plain forms of attach and detach', () => {
  assert.deepEqual(parseFast(argv('attach', 'c1', '10.1.2.3', '--network', 'blue', '--name=web', '--json', '--timeout', '2.5')), {
    command: 'attach',
    args: ['c1', '10.1.2.3'],
    opts: { network: 'blue', name: 'web', json: true, timeout: '2.5' },
  });
  assert.deepEqual(parseFast(argv('detach', 'c1', '--api', '/x.sock')), { command: 'detach', args: ['c1'], opts: { api: '/x.sock' } });
});

test('anything else is left to the full CLI (its help, messages and exit codes)', () => {
  for (const a of [
    ['status'],
    ['network', 'ls'],
    ['attach'],
    ['attach', 'c1', '10.1.2.3', 'extra'],
    ['attach', 'c1', '--help'],
    ['attach', 'c1', '-h'],
    ['attach', 'c1', '--bogus'],
    ['attach', 'c1', '--network'],
    ['attach', 'c1', '--network', '--json'],
    ['attach', 'c1', '--json=yes'],
    ['attach', 'c1', '--timeout', '0'],
    ['attach', 'c1', '--timeout', 'soon'],
    ['attach', 'c1', '--network', 'a', '--network', 'b'],
    ['detach', 'c1', '--name', 'web'],
    ['detach', 'c1', 'c2'],
    ['attach', '--', 'c1'],
  ]) {
    assert.equal(parseFast(argv(...a)), undefined, a.join(' '));
  }
});
