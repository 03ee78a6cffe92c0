/**
 * The published-port rules (src/system/iptables.ts, DNAT section) in a namespace of their own: the chains
 * hold exactly what they are given, are jumped to once, are emptied by a reconcile with no rules, and
 * `weft reset` (removeAllWeftRules) removes them. No dockerd needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { reconcileDnat, removeAllWeftRules, type PortRule } from '../src/system/iptables.js';
import { makeNetns, run } from './helpers/dockerd.js';
import { needsRoot } from './helpers/require-root.js';

const natRules = async (ns: string) => (await run('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-S'])).stdout;

test('published-port chains: exact, idempotent, emptied, removed by reset', { skip: needsRoot('iptables', 'iptables-restore') }, async (t) => {
  const ns = await makeNetns(`wdn${randomBytes(3).toString('hex')}`);
  t.after(() => ns.remove());
  const web: PortRule = { proto: 'tcp', hostPort: 8080, ip: '10.40.1.2', port: 80, networkCidr: '10.40.0.0/16', owner: 'aaaaaaaaaaaa' };
  const dns: PortRule = { proto: 'udp', hostIp: '192.0.2.1', hostPort: 5353, ip: '10.40.1.3', port: 53, owner: 'bbbbbbbbbbbb' };
  await reconcileDnat([web, dns], { netns: ns.name });
  await reconcileDnat([web, dns], { netns: ns.name }); // again: nothing doubled
  let s = await natRules(ns.name);
  assert.equal(s.match(/-j WEFT-DNAT$/gm)?.length, 2, `one jump from PREROUTING and one from OUTPUT:\n${s}`);
  assert.match(s, /^-A PREROUTING -m addrtype --dst-type LOCAL -j WEFT-DNAT$/m);
  assert.match(s, /^-A OUTPUT ! -d 127\.0\.0\.0\/8 -m addrtype --dst-type LOCAL -j WEFT-DNAT$/m);
  assert.equal(s.match(/^-A POSTROUTING -j WEFT-DNAT-HAIRPIN$/gm)?.length, 1);
  assert.match(s, /^-A WEFT-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "weft: aaaaaaaaaaaa" -j DNAT --to-destination 10\.40\.1\.2:80$/m);
  assert.match(s, /^-A WEFT-DNAT -d 192\.0\.2\.1\/32 -p udp -m udp --dport 5353 .* -j DNAT --to-destination 10\.40\.1\.3:53$/m);
  assert.match(s, /^-A WEFT-DNAT-HAIRPIN -s 10\.40\.0\.0\/16 -d 10\.40\.1\.2\/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT .* -j MASQUERADE$/m);
  assert.equal(s.match(/^-A WEFT-DNAT /gm)?.length, 2);
  // one container stopped: exactly the other's rule is left
  await reconcileDnat([dns], { netns: ns.name });
  s = await natRules(ns.name);
  assert.equal(s.match(/^-A WEFT-DNAT /gm)?.length, 1);
  assert.doesNotMatch(s, /8080/);
  // none left: chains and jumps gone
  await reconcileDnat([], { netns: ns.name });
  assert.doesNotMatch(await natRules(ns.name), /WEFT-DNAT/);
  // weft reset removes them too
  await reconcileDnat([web], { netns: ns.name });
  await removeAllWeftRules({ netns: ns.name });
  assert.doesNotMatch(await natRules(ns.name), /WEFT-DNAT/);
});
