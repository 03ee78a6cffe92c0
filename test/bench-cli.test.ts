import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { implementedBackends } from '../src/backends/registry.js';
import type { BenchRow } from '../src/bench/backends.js';
import { ipJson } from '../src/system/ip.js';
import { runWeft } from '../src/testbed/agents.js';
import { needsRoot } from './helpers/require-root.js';

/** `weft bench --json` (short: 1 s runs): a row per implemented backend plus the underlay, with measured numbers; nothing left behind. */
test('weft bench --json gives a measured row per implemented backend', { timeout: 180_000, skip: needsRoot('iperf3') }, async () => {
  const r = await runWeft(['bench', '--json', '--seconds', '1', '--pings', '3'], { timeoutMs: 170_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^bench: {3}round 1\/1: iperf3 underlay/m, 'progress is shown while it runs');
  const out = JSON.parse(r.stdout) as { rows: BenchRow[] };
  assert.deepEqual(out.rows.map((x) => x.path), ['underlay', ...implementedBackends().map((b) => `${b} (weft)`)]);
  for (const row of out.rows) {
    assert.ok(row.gbps > 0 && row.rttUs > 0 && row.cpuPerGbps > 0, JSON.stringify(row));
    assert.equal(typeof row.encrypted, 'boolean');
    if (row.path !== 'underlay') assert.ok(row.gbpsVsUnderlay! > 0 && row.rttVsUnderlay! > 0);
  }
  assert.equal(out.rows.find((x) => x.backend === 'vxlan')?.mtu, 1450);
  assert.equal(out.rows.find((x) => x.backend === 'wireguard')?.encrypted, true, 'wireguard says it encrypts');
  const prefix = /^bench: test bed (\S+)-\* /m.exec(r.stderr)?.[1];
  assert.ok(prefix, r.stderr);
  const left = (await ipJson<Array<{ name: string }>>(['netns', 'list'])).map((n) => n.name).filter((n) => n.startsWith(`${prefix}-`));
  assert.deepEqual(left, [], 'namespaces left behind');
});
