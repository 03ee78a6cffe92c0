import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatBench, withRatios, type BenchRow } from '../../src/bench/backends.js';
import { coresBusy, cpuTicks, median, pairedRatio, pct } from '../../src/bench/measure.js';

test('median, percentile, CPU ticks from /proc/stat text, cores busy', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(pct([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9);
  const a = cpuTicks('cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3');
  assert.deepEqual(a, { busy: 200, total: 1000 });
  const b = cpuTicks('cpu  200 0 200 1300 100 0 0 0 0 0\n');
  assert.equal(coresBusy(a, b, 2), 0.5);
  assert.equal(coresBusy(a, a, 2), 0);
});

test('paired ratio: the median of the per-round ratios, not the ratio of the medians', () => {
  // rounds under different loads (b: 10, 6, 8, 5, 9); a ran right beside b in each round
  const a = [9.3, 5.2, 7.0, 4.6, 8.3];
  const b = [10, 6, 8, 5, 9];
  assert.equal(median(a) / median(b), 0.875);
  assert.equal(pairedRatio(a, b), 4.6 / 5);
  assert.equal(pairedRatio([1, 2, 3], [2, 2, 2]), 1);
  assert.throws(() => pairedRatio([1], [1, 2]), /equal, non-zero lengths/);
  assert.throws(() => pairedRatio([], []), /equal, non-zero lengths/);
});

test('ratios to the underlay and the table', () => {
  const row = (path: string, gbps: number, rttUs: number, extra: Partial<BenchRow> = {}): BenchRow => ({ path, gbps, rttUs, cpuPerGbps: 0.5, mtu: 1500, encrypted: false, ...extra });
  const rows = withRatios([row('underlay', 10, 50), row('vxlan (weft)', 5, 100, { backend: 'vxlan', mtu: 1450 })]);
  assert.equal(rows[0]!.gbpsVsUnderlay, undefined);
  assert.equal(rows[1]!.gbpsVsUnderlay, 0.5);
  assert.equal(rows[1]!.rttVsUnderlay, 2);
  const t = formatBench(rows, { seconds: 3, reps: 1 });
  assert.match(t, /^\| vxlan \(weft\) \| 5\.00 \| 0\.50× \| 100 \| 2\.00× \| 0\.50 \| 1450 \| no \|$/m);
  assert.match(t, /^\| underlay \| 10\.00 \| 1× \| 50 \| 1× \| 0\.50 \| 1500 \| no \|$/m);
});
