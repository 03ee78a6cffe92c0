import { cidrWithin } from '../../src/net/ipv4.js';
import '../../src/backends/all.js';
import { waitFor } from '../../src/testbed/wait.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNetwork } from '../../src/config/registry.js';
import { openStore } from '../../src/store/index.js';
import { bridgeJson, ipJson } from '../../src/system/ip.js';
import { AgentProcess, runWeft, type CliResult } from '../../src/testbed/agents.js';
import { createTestbed, type Testbed, type TestbedHost } from '../../src/testbed/index.js';
import { formatMatrix, pingAll, type PingTarget } from '../../src/testbed/ping.js';

/**
 * A weft cluster for end-to-end tests: a test bed with a unique prefix, one embedded SQLite store in a temp
 * dir, a real `weft agent` process per host (short lease TTL) and containers attached through the agents.
 * Use withCluster(): it always stops the agents (by PID) and destroys the test bed, also on failure.
 */

export const NETWORK = 'e2e';
export const LEASE_TTL = 6; // seconds: a removed host's lease expires within a test
export const GRACE = 2;

export { sleep } from '../../src/testbed/wait.js';

export interface Container extends PingTarget {
  host: string;
}

export interface Route {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}
export interface Link {
  ifname: string;
  ifindex: number;
  address?: string;
  linkinfo?: { info_kind?: string };
}

export const routes = (ns: string) => ipJson<Route[]>(['-4', 'route', 'show'], { netns: ns });
export const links = (ns: string) => ipJson<Link[]>(['-d', 'link', 'show'], { netns: ns });
export const fdb = (ns: string, dev: string) => bridgeJson<Array<{ mac: string; dst?: string }>>(['fdb', 'show', 'dev', dev], { netns: ns });
export const neigh = (ns: string, dev: string) => ipJson<Array<{ dst: string; lladdr?: string; state?: string[] }>>(['-4', 'neigh', 'show', 'dev', dev], { netns: ns });

/** `ip -json route` dst ("default", "10.1.2.0/24" or a bare host address) inside `cidr`? */
export const routeIn = (dst: string, cidr: string) => dst !== 'default' && cidrWithin(dst.includes('/') ? dst : `${dst}/32`, cidr);

/** Runs this checkout's `weft` CLI (from the root namespace; the agent is reached by its socket). */
export const weft = (args: string[], timeoutMs = 15_000): Promise<CliResult> => runWeft(args, { timeoutMs });

/** Polls until `check` answers true (or a value); see src/testbed/wait.ts. */
export const waitUntil = (what: string, ms: number, check: () => Promise<boolean | string>) => waitFor(what, ms, check);

export interface ClusterOptions {
  backend: string;
  /** The network's CIDR, or a function of the test bed's underlay /24 (the bridge backend shares it). */
  cidr: string | ((underlay: string) => string);
  hosts: number;
  containersPerHost: number;
  /** Narrow the leasable range (flannel's SubnetMin/SubnetMax). */
  subnetMin?: string;
  subnetMax?: string;
  /** More fields of the Backend config (e.g. a VNI, bgp's HoldTime); a function sees the test bed (its host addresses). */
  backendConfig?: Record<string, unknown> | ((tb: Testbed) => Record<string, unknown>);
  /** More fields of the network's config (SubnetLen, SubnetMin, Backend fields under `backend`). */
  config?: (underlay: string) => Record<string, unknown>;
  /** Backend fields besides Type (Parent, Gateway, …). */
  backendFields?: Record<string, unknown>;
  /** Further networks created before the agents start (every agent joins them too). */
  networks?: Array<{ name: string; cidr: string; backend: string }>;
  /** Runs after the test bed is built, before any agent starts (e.g. start a probe that watches the agents' effect). */
  beforeAgents?: (tb: Testbed) => Promise<void> | void;
}

const live = new Set<Cluster>();

/** Destroys clusters that were never torn down (their test was cancelled by a timeout). */
export async function destroyLeftovers(): Promise<void> {
  for (const c of [...live]) await c.destroy().catch(() => {});
}

export class Cluster {
  readonly agents = new Map<string, AgentProcess>();
  readonly containers: Container[] = [];

  private constructor(
    readonly o: ClusterOptions,
    readonly tb: Testbed,
    readonly dir: string,
    readonly storeUrl: string,
  ) {}

  static async create(o: ClusterOptions): Promise<Cluster> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `weft-e2e-${o.backend}-`));
    const storeUrl = `sqlite://${path.join(dir, 'weft.db')}`;
    let tb: Testbed | undefined;
    try {
      tb = await createTestbed({ hosts: o.hosts });
      const underlay = `${tb.hosts[0]!.ip.split('.').slice(0, 3).join('.')}.0/24`;
      const store = await openStore(storeUrl, { create: true });
      try {
        const cidr = typeof o.cidr === 'function' ? o.cidr(underlay) : o.cidr;
        await createNetwork(store, NETWORK, {
          Network: cidr,
          ...(o.config?.(underlay) ?? {}),
          ...(o.subnetMin ? { SubnetMin: o.subnetMin } : {}),
          ...(o.subnetMax ? { SubnetMax: o.subnetMax } : {}),
          Backend: { Type: o.backend, ...(typeof o.backendConfig === 'function' ? o.backendConfig(tb) : o.backendConfig), ...(o.backendFields ?? {}) },
        });
        for (const n of o.networks ?? []) await createNetwork(store, n.name, { Network: n.cidr, Backend: { Type: n.backend } });
      } finally {
        await store.close();
      }
      const c = new Cluster(o, tb, dir, storeUrl);
      live.add(c);
      try {
        await o.beforeAgents?.(tb);
        for (const h of tb.hosts) await c.startAgent(h);
        await Promise.all([...c.agents.values()].map((a) => a.waitForPeers(o.hosts - 1)));
        for (const h of tb.hosts) await c.addContainers(h, o.containersPerHost);
      } catch (e) {
        await c.destroy();
        throw e;
      }
      return c;
    } catch (e) {
      await tb?.destroy().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  agent(h: TestbedHost | string): AgentProcess {
    const a = this.agents.get(typeof h === 'string' ? h : h.id);
    assert.ok(a, `no agent on ${typeof h === 'string' ? h : h.id}`);
    return a;
  }

  async subnetOf(h: TestbedHost | string): Promise<string> {
    const st = await this.agent(h).status();
    assert.ok(st?.networks[0], `agent on ${typeof h === 'string' ? h : h.id} runs no network`);
    return st.networks[0].subnet;
  }

  on(host: string): Container[] {
    return this.containers.filter((c) => c.host === host);
  }

  async startAgent(h: TestbedHost): Promise<AgentProcess> {
    const a = new AgentProcess(h, { storeUrl: this.storeUrl, dir: this.dir, leaseTtlSeconds: LEASE_TTL, graceSeconds: GRACE });
    this.agents.set(h.id, a);
    return a.start();
  }

  async addContainers(h: TestbedHost, n: number): Promise<void> {
    const first = this.on(h.id).length + 1;
    for (let i = first; i < first + n; i++) {
      const ns = await this.tb.addContainer(h, `c${i}`);
      const ep = await this.agent(h).attach(ns, { network: NETWORK });
      this.containers.push({ ns, label: `${h.id}-c${i}`, ip: ep.address.split('/')[0]!, host: h.id });
    }
  }

  /** Pings every ordered pair once and asserts each was answered (matrix in the message otherwise). */
  async assertAllPairs(targets: Container[] = this.containers): Promise<void> {
    // A just-attached container's route may still be on its way to the other hosts: await every pair (a
    // bound against hanging), then assert on the last matrix.
    await waitFor('every pair of containers pings', 20_000, async () => {
      const pings = await pingAll(targets, { timeoutSec: 2 });
      assert.equal(pings.length, targets.length * (targets.length - 1));
      return pings.every((p) => p.ok) || `pings failed:\n${formatMatrix(targets, pings)}`;
    }, 500);
  }

  /** Kills the agents by PID, destroys the test bed, removes the temp dir; returns namespaces left behind. */
  async destroy(): Promise<string[]> {
    live.delete(this);
    for (const a of this.agents.values()) await a.stop('SIGKILL').catch(() => {});
    await this.tb.destroy().catch(() => {});
    fs.rmSync(this.dir, { recursive: true, force: true });
    const p = this.tb.prefix;
    return (await ipJson<Array<{ name: string }>>(['netns', 'list'])).map((n) => n.name).filter((n) => n === p || n.startsWith(`${p}-`));
  }
}

/** Builds a cluster, runs `fn`, and always tears the cluster down; also fails when namespaces are left. */
export async function withCluster(o: ClusterOptions, fn: (c: Cluster) => Promise<void>): Promise<void> {
  const c = await Cluster.create(o);
  let failure: unknown;
  try {
    await fn(c);
  } catch (e) {
    failure = e;
  }
  const left = await c.destroy();
  if (failure) throw failure;
  assert.deepEqual(left, [], 'namespaces left behind');
}
