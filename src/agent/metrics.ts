import http from 'node:http';
import type { Counter, Histogram, Registry } from 'prom-client';
import { WeftError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { AgentStatus } from './types.js';

/**
 * The agent's Prometheus metrics (GET /metrics on the API socket, and on TCP with `--metrics-addr`).
 * Gauges are filled at scrape time from the agent's status (metricsFromStatus is pure, unit-tested); counters
 * and the reconcile histogram are fed as things happen.
 */

/** One gauge sample: metric name, labels, value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export const GAUGES: Record<string, string> = {
  weft_lease_expiry_seconds: "seconds until this host's lease of the network runs out unless renewed",
  weft_leases: 'live leases in the network (this host and its peers)',
  weft_peers: 'peers this host forwards to in the network',
  weft_peer_reachable: "1 when the peer's underlay address answered the last probe, else 0",
  weft_endpoints: "containers attached on this host in the network",
  weft_ipam_used: "addresses taken in this host's pool",
  weft_ipam_free: "addresses still free in this host's pool",
  weft_network_failed: '1 for a network this host could not join',
  weft_store_up: '1 when the last store probe answered in time',
  weft_backend_healthy: "1 when the network's backend says it can carry traffic",
  weft_backend_stat: "numeric counters a backend's status() exposes (packets, bytes, drops, handshakes …)",
};

/** The gauge samples of one status (pure: what /metrics says is what `weft status --json` says). */
export function metricsFromStatus(st: AgentStatus, now = st.now ?? Date.now()): Sample[] {
  const out: Sample[] = [];
  const add = (name: string, labels: Record<string, string>, value: number) => out.push({ name, labels, value });
  for (const n of st.networks) {
    const l = { network: n.name };
    if (n.leaseExpiresAt !== undefined) add('weft_lease_expiry_seconds', l, Math.max(0, (n.leaseExpiresAt - now) / 1000));
    add('weft_leases', l, n.peers.length + 1);
    add('weft_peers', l, n.peers.length);
    for (const p of n.peers) if (p.reachable !== undefined) add('weft_peer_reachable', { ...l, peer: p.hostId ?? p.publicIp, public_ip: p.publicIp }, p.reachable ? 1 : 0);
    if (n.endpoints !== undefined) add('weft_endpoints', l, n.endpoints);
    if (n.ipam) {
      add('weft_ipam_used', l, n.ipam.used);
      add('weft_ipam_free', l, Math.max(0, n.ipam.size - n.ipam.used));
    }
    if (n.status) {
      add('weft_backend_healthy', { ...l, backend: n.backend }, n.status.healthy ? 1 : 0);
      for (const [k, v] of Object.entries(n.status)) {
        if (typeof v === 'number' && Number.isFinite(v)) add('weft_backend_stat', { ...l, backend: n.backend, stat: k }, v);
        // one level of nested counters, e.g. { counters: { rxPackets: 3 } }
        else if (v && typeof v === 'object' && !Array.isArray(v)) {
          for (const [k2, v2] of Object.entries(v)) if (typeof v2 === 'number' && Number.isFinite(v2)) add('weft_backend_stat', { ...l, backend: n.backend, stat: `${k}.${k2}` }, v2);
        }
      }
    }
  }
  for (const name of Object.keys(st.failed ?? {})) add('weft_network_failed', { network: name }, 1);
  if (st.store) add('weft_store_up', {}, st.store.healthy ? 1 : 0);
  return out;
}

/** What prom-client's registry answers with (its PROMETHEUS_CONTENT_TYPE), known before it is loaded. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Observations kept before prom-client is loaded; past this many it is loaded and they are replayed. */
const MAX_PENDING = 10_000;

type Pending = { kind: 'reconcile'; network: string; seconds: number; error?: string } | { kind: 'dns'; network: string; rcode: string };

interface Loaded {
  registry: Registry;
  reconciles: Counter<'network' | 'result'>;
  reconcileSeconds: Histogram<'network'>;
  dnsQueries: Counter<'network' | 'rcode'>;
}

/**
 * prom-client (with @opentelemetry/api) costs ~10 MB and a good part of the agent's start-up: it is loaded
 * at the first scrape. Until then observations wait in a bounded list and are replayed into it.
 */
export class AgentMetrics {
  private loaded?: Loaded;
  private loading?: Promise<Loaded>;
  private pending: Pending[] = [];

  constructor(
    private readonly status: () => AgentStatus,
    private readonly storeErrors: () => number,
  ) {}

  private load(): Promise<Loaded> {
    this.loading ??= import('prom-client').then(({ Counter, Gauge, Histogram, Registry }) => {
      const r = new Registry();
      const reconciles = new Counter({ name: 'weft_reconciles_total', help: 'reconciles of peers into the data plane', labelNames: ['network', 'result'], registers: [r] });
      const reconcileSeconds = new Histogram({
        name: 'weft_reconcile_duration_seconds',
        help: 'time one reconcile took',
        labelNames: ['network'],
        buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
        registers: [r],
      });
      let storeErrorsSeen = 0;
      const storeErrors = this.storeErrors;
      const storeErrorsCounter: Counter = new Counter({
        name: 'weft_store_errors_total',
        help: 'store probes that failed or timed out',
        registers: [r],
        collect: () => {
          const n = storeErrors();
          if (n > storeErrorsSeen) storeErrorsCounter.inc(n - storeErrorsSeen);
          storeErrorsSeen = n;
        },
      });
      const dnsQueries = new Counter({ name: 'weft_dns_queries_total', help: 'DNS queries answered by the agent', labelNames: ['network', 'rcode'], registers: [r] });
      // every gauge is refilled from one status per scrape (a status younger than 100 ms is reused)
      let cache: { at: number; samples: Sample[] } | undefined;
      const current = () => {
        if (!cache || Date.now() - cache.at > 100) cache = { at: Date.now(), samples: metricsFromStatus(this.status()) };
        return cache.samples;
      };
      for (const [name, help] of Object.entries(GAUGES)) {
        new Gauge({
          name,
          help,
          labelNames: ['network', 'peer', 'public_ip', 'backend', 'stat'],
          registers: [r],
          collect() {
            this.reset();
            for (const s of current()) if (s.name === name) this.set(s.labels, s.value);
          },
        });
      }
      const loaded: Loaded = { registry: r, reconciles, reconcileSeconds, dnsQueries };
      this.loaded = loaded;
      for (const p of this.pending.splice(0)) this.apply(loaded, p);
      return loaded;
    });
    return this.loading;
  }

  private apply(m: Loaded, p: Pending): void {
    if (p.kind === 'reconcile') {
      m.reconciles.inc({ network: p.network, result: p.error ? 'error' : 'ok' });
      m.reconcileSeconds.observe({ network: p.network }, p.seconds);
    } else m.dnsQueries.inc({ network: p.network, rcode: p.rcode });
  }

  private record(p: Pending): void {
    if (this.loaded) return this.apply(this.loaded, p);
    this.pending.push(p);
    if (this.pending.length >= MAX_PENDING) void this.load();
  }

  observeReconcile(network: string, seconds: number, error?: string): void {
    this.record({ kind: 'reconcile', network, seconds, ...(error ? { error } : {}) });
  }

  /** For the DNS server: count each answered query with `dnsQuery(network, rcode)`. */
  dnsQuery(network: string, rcode = 'NOERROR'): void {
    this.record({ kind: 'dns', network, rcode });
  }

  async text(): Promise<string> {
    return (await this.load()).registry.metrics();
  }

  get contentType(): string {
    return METRICS_CONTENT_TYPE;
  }
}

/** Parses `--metrics-addr` / `--ui-addr` "HOST:PORT" (IPv4 or localhost). */
export function parseHostPort(addr: string, flag: string): { host: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}|localhost|\[::1?\]):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new WeftError(`${flag}: expected HOST:PORT such as 127.0.0.1:9402, got "${addr}"`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** Serves GET /metrics on TCP (read-only; nothing else answers). */
export async function serveMetrics(addr: string, metrics: AgentMetrics, log: Logger): Promise<http.Server> {
  const { host, port } = parseHostPort(addr, '--metrics-addr');
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || new URL(req.url ?? '/', 'http://x').pathname !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
      (err) => {
        log.error({ err }, 'metrics failed');
        res.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
