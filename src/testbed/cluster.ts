import { nthAddress } from '../net/ipv4.js';
import os from 'node:os';
import { pino } from 'pino';
import { createBackend } from '../backends/all.js';
import type { Backend, BackendContext, Underlay } from '../backends/types.js';
import type { NsOpts } from '../system/netns.js';
import type { Logger } from '../util/log.js';
import type { NetworkConfig } from '../config/types.js';
import type { Lease } from '../lease/types.js';
import { ensureBridge } from '../system/bridge.js';
import { ensureForwardAccept } from '../system/iptables.js';
import { enableIpForward } from '../system/sysctl.js';
import { findUnderlay } from '../system/underlay.js';
import { attachVeth, hostIfName } from '../system/veth.js';
import type { Testbed, TestbedHost } from './index.js';
import { pingAll } from './ping.js';

/**
 * Drives backends directly in test bed hosts, without an agent or a store: leases are made by hand
 * (host i gets `${base}.${i}.0/24`). For backend tests and hand-vs-weft benchmarks.
 */
export interface ClusterContainer {
  ns: string;
  ip: string;
  host: string;
}

export interface ClusterNode {
  host: TestbedHost;
  backend: Backend;
  lease: Lease;
  containers: ClusterContainer[];
  /** Log lines (pino JSON objects) the backend wrote. */
  logs: Array<Record<string, any>>;
}

export interface ClusterOptions {
  network: NetworkConfig;
  /** Containers per host (default 2). */
  containers?: number;
  bridge?: string;
}

function capturingLogger(into: Array<Record<string, any>>) {
  return pino(
    { level: 'debug', base: undefined },
    {
      write(line: string) {
        into.push(JSON.parse(line));
      },
    },
  );
}

function subnetFor(network: string, n: number): string {
  const [a, b] = network.split('/')[0]!.split('.');
  return `${a}.${b}.${n}.0/24`;
}

/** A backend context for driving a backend directly in a test namespace (no agent, state in a temp dir). */
export function testBackendContext(network: NetworkConfig, underlay: Underlay, log: Logger, sys: NsOpts): BackendContext {
  return { networkName: 'testnet', network, underlay, log, stateDir: os.tmpdir(), bridge: 'weft0', hostId: 'test', sys };
}

/** Sets up one host: forwarding, bridge, backend init + activate, containers attached. Does not reconcile. */
export async function addClusterNode(tb: Testbed, host: TestbedHost, o: ClusterOptions): Promise<ClusterNode> {
  const sys = { netns: host.ns };
  const logs: Array<Record<string, any>> = [];
  const underlay = await findUnderlay({}, sys);
  const backend = createBackend(testBackendContext(o.network, underlay, capturingLogger(logs), sys));
  const n = Number(host.id.slice(1));
  const subnet = subnetFor(o.network.Network, n);
  await enableIpForward(sys);
  await ensureForwardAccept(o.network.Network, sys);
  const bridge = o.bridge ?? 'weft0';
  const gw = nthAddress(subnet, 1);
  await ensureBridge(bridge, gw, backend.mtu, sys);
  const backendData = await backend.init();
  const lease: Lease = { network: 'testnet', subnet, publicIp: underlay.ip, backendType: o.network.Backend.Type, backendData, hostId: host.id };
  await backend.activate(lease);
  const containers: ClusterContainer[] = [];
  for (let i = 1; i <= (o.containers ?? 2); i++) {
    const ns = await tb.addContainer(host.id, `c${i}`);
    const address = nthAddress(subnet, 1 + i);
    await attachVeth({ netns: ns, ifname: 'eth0', address, gateway: gw.split('/')[0], mtu: backend.mtu, bridge, hostIf: hostIfName(ns, 'testnet'), hostNetns: host.ns });
    containers.push({ ns, ip: address.split('/')[0]!, host: host.id });
  }
  return { host, backend, lease, containers, logs };
}

export async function buildCluster(tb: Testbed, o: ClusterOptions): Promise<ClusterNode[]> {
  const nodes = await Promise.all(tb.hosts.map((h) => addClusterNode(tb, h, o)));
  await reconcileAll(nodes);
  return nodes;
}

/** Every node reconciles against every lease (its own included: backends skip it). */
export async function reconcileAll(nodes: ClusterNode[], leases: Lease[] = nodes.map((n) => n.lease)): Promise<void> {
  await Promise.all(nodes.map((n) => n.backend.reconcile(leases)));
}

/** Pings every container from every other container; returns the failures as "from → to". */
export async function pingMatrix(_tb: Testbed, nodes: ClusterNode[]): Promise<string[]> {
  const targets = nodes.flatMap((n) => n.containers).map((c) => ({ ns: c.ns, label: c.ns, ip: c.ip }));
  const ipOf = new Map(targets.map((t) => [t.label, t.ip]));
  const results = await pingAll(targets);
  return results.filter((r) => !r.ok).map((r) => `${r.from} → ${ipOf.get(r.to)}`).sort();
}
