/** checkUnderlayOverlap, the check an agent makes when it joins a network (and `network create` on its host). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkUnderlayOverlap } from '../../src/config/ranges.js';

test('checkUnderlayOverlap refuses a network overlapping a host route, ignores the default route', () => {
  assert.throws(() => checkUnderlayOverlap('192.168.79.0/24', ['10.0.0.0/8', '192.168.79.0/24']), /network 192\.168\.79\.0\/24 overlaps 192\.168\.79\.0\/24, a route of this host's underlay/);
  assert.throws(() => checkUnderlayOverlap('192.168.0.0/16', ['192.168.79.7']), /overlaps 192\.168\.79\.7/);
  assert.throws(() => checkUnderlayOverlap('10.5.0.0/16', ['10.5.3.9/24'], 'host h1'), /a route of host h1/);
  assert.doesNotThrow(() => checkUnderlayOverlap('10.5.0.0/16', ['default', '0.0.0.0/0', '192.168.79.0/24', '10.6.0.0/16', 'garbage']));
});
