/**
 * prom-client is loaded at the first scrape, not at agent start; observations made before are not lost.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { AgentMetrics, METRICS_CONTENT_TYPE } from '../../src/agent/metrics.js';
import type { AgentStatus } from '../../src/agent/types.js';

const require = createRequire(import.meta.url);
const promLoaded = () => Object.keys(require.cache).some((k) => k.includes(`${'/'}prom-client${'/'}`));

test('metrics: prom-client waits for the first scrape, which still counts what happened before', async () => {
  const status: AgentStatus = { hostId: 'h', publicIp: '192.0.2.1', iface: 'eth0', networks: [], store: { url: 'x', healthy: true } } as unknown as AgentStatus;
  const m = new AgentMetrics(() => status, () => 2);
  m.observeReconcile('blue', 0.003);
  m.observeReconcile('blue', 0.2, 'boom');
  assert.equal(promLoaded(), false, 'prom-client is not loaded before a scrape');
  const text = await m.text();
  assert.equal(promLoaded(), true);
  assert.match(text, /weft_reconciles_total\{network="blue",result="ok"\} 1/);
  assert.match(text, /weft_reconciles_total\{network="blue",result="error"\} 1/);
  assert.match(text, /weft_reconcile_duration_seconds_count\{network="blue"\} 2/);
  assert.match(text, /weft_store_errors_total 2/);
  assert.match(text, /weft_store_up 1/);
  // after the load, observations go straight in
  m.observeReconcile('blue', 0.003);
  assert.match(await m.text(), /weft_reconciles_total\{network="blue",result="ok"\} 2/);
  assert.equal(m.contentType, METRICS_CONTENT_TYPE);
});
