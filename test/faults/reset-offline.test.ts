import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { ipJson } from '../../src/system/ip.js';
import { WEFT_BIN } from '../../src/testbed/agents.js';
import { nsExec } from '../../src/testbed/index.js';
import { destroyLeftovers, withCluster } from '../helpers/agent-cluster.js';
import { needsRoot } from '../helpers/require-root.js';

/**
 * Offline `weft reset` (no agent) on a host whose namespace has no default route (issue 8, smaller
 * defects: "says success but leaves weft.1"). Without a default route the underlay cannot be found; reset
 * must still remove the backend's device and the bridge, and say so only when it did.
 */

after(() => destroyLeftovers());

describe('faults: offline weft reset with no default route', { timeout: 90_000, skip: needsRoot('iptables') }, () => {
  test('vxlan: weft.1 and weft0 are removed, and the output says so truthfully', { timeout: 80_000 }, () =>
    withCluster({ backend: 'vxlan', cidr: '10.241.0.0/16', hosts: 1, containersPerHost: 1 }, async (c) => {
      const h1 = c.tb.hosts[0]!;
      const agent = c.agent(h1);
      await agent.stop('SIGTERM');
      const names = async () => (await ipJson<Array<{ ifname: string }>>(['link', 'show'], { netns: h1.ns })).map((l) => l.ifname);
      assert.ok((await names()).includes('weft.1'), 'the stopped agent left its VXLAN device (kernel-only data plane)');
      await nsExec(h1.ns, 'ip route del default 2>/dev/null; ip -4 route show default');
      assert.equal((await nsExec(h1.ns, ['ip', '-4', 'route', 'show', 'default'])).stdout.trim(), '', 'no default route');

      const reset = (json: boolean) =>
        nsExec(h1.ns, [process.execPath, WEFT_BIN, 'reset', '--api', `${agent.api}.none`, '--store', c.storeUrl, '--state-dir', agent.stateDir, '--host-id', h1.id, ...(json ? ['--json'] : [])], { allowFail: true });
      const r = await reset(false);
      assert.equal(r.code, 0, `reset: ${r.stdout} ${r.stderr}`);
      assert.match(r.stdout, /^reset: removed weft's devices, rules and leases on this host$/m);
      const left = await names();
      assert.ok(!left.includes('weft.1'), `weft.1 removed (left: ${left.join(' ')})`);
      assert.ok(!left.includes('weft0'), `weft0 removed (left: ${left.join(' ')})`);
      assert.deepEqual(left.filter((n) => /^vw[0-9a-f]{8}$/.test(n)), [], 'container ports removed');
      // a second reset finds nothing left and says so just the same
      const again = await reset(true);
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(JSON.parse(again.stdout), { networks: ['e2e'], left: [] });
    }),
  );
});
