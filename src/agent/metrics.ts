import http from 'node:http';
import type { Counter, Histogram, Registry } from 'prom-client';
import { isIPv4 } from '../net/ipv4.js';
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
  weft_backend_stat: "other numbers a backend's status() exposes (port, pid …; its packet/byte/drop counters are the *_total metrics)",
  weft_wireguard_peer_last_handshake_seconds: 'unix time of the last WireGuard handshake with the peer (0: none yet)',
};

/**
 * Counters read from the status at scrape time: they only grow while the process that counts them lives
 * (weft-udpd, wireguard-go, the kernel device) and start again from 0 when it is restarted, which
 * Prometheus' rate() reads as a counter reset.
 */
export const STATUS_COUNTERS: Record<string, string> = {
  weft_backend_packets_total: 'packets the backend carried, by direction (tx: to peers, rx: from peers)',
  weft_backend_bytes_total: 'bytes the backend carried, by direction',
  weft_backend_drops_total: 'packets or datagrams the backend dropped, by reason',
  weft_backend_restarts_total: "times the agent restarted the backend's helper process (weft-udpd, wireguard-go)",
  weft_wireguard_peer_receive_bytes_total: 'bytes received from the WireGuard peer',
  weft_wireguard_peer_transmit_bytes_total: 'bytes sent to the WireGuard peer',
};

/** The DNS server's counts of one network (src/dns/server.ts DnsServerStats). */
export interface DnsCounts {
  queries: number;
  answered: number;
  forwarded: number;
  malformed: number;
}

export const DNS_COUNTERS: Record<string, { help: string; key: keyof DnsCounts }> = {
  weft_dns_queries_total: { help: "DNS queries received on the network's gateway", key: 'queries' },
  weft_dns_answered_total: { help: 'DNS queries answered from weft\'s records', key: 'answered' },
  weft_dns_forwarded_total: { help: 'DNS queries forwarded upstream', key: 'forwarded' },
  weft_dns_malformed_total: { help: 'DNS packets that did not decode', key: 'malformed' },
};

/** Every label any status sample carries (prom-client wants them declared). */
const LABELS = ['network', 'peer', 'public_ip', 'public_key', 'backend', 'stat', 'direction', 'reason'] as const;

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** udp's `counters` names → (metric, direction). */
const TRAFFIC: Record<string, [string, string]> = {
  txPackets: ['weft_backend_packets_total', 'tx'],
  rxPackets: ['weft_backend_packets_total', 'rx'],
  txBytes: ['weft_backend_bytes_total', 'tx'],
  rxBytes: ['weft_backend_bytes_total', 'rx'],
};

/** The gauge and counter samples of one status (pure: what /metrics says is what `weft status --json` says). */
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
      const b = { ...l, backend: n.backend };
      add('weft_backend_healthy', b, n.status.healthy ? 1 : 0);
      for (const [k, v] of Object.entries(n.status)) {
        if (k === 'restarts' && isNum(v)) add('weft_backend_restarts_total', b, v);
        else if (k === 'drops' && isObj(v)) {
          for (const [reason, d] of Object.entries(v)) if (reason !== 'total' && isNum(d)) add('weft_backend_drops_total', { ...b, reason }, d);
        } else if (k === 'peers' && Array.isArray(v)) wireguardPeers(n, v, add);
        else if (isNum(v)) add('weft_backend_stat', { ...b, stat: k }, v);
        // one level of nested numbers, e.g. { counters: { rxPackets: 3 } }
        else if (isObj(v)) {
          for (const [k2, v2] of Object.entries(v)) {
            if (!isNum(v2)) continue;
            const t = k === 'counters' ? TRAFFIC[k2] : undefined;
            if (t) add(t[0], { ...b, direction: t[1] }, v2);
            else add('weft_backend_stat', { ...b, stat: `${k}.${k2}` }, v2);
          }
        }
      }
    }
  }
  for (const name of Object.keys(st.failed ?? {})) add('weft_network_failed', { network: name }, 1);
  if (st.store) add('weft_store_up', {}, st.store.healthy ? 1 : 0);
  return out;
}

/**
 * The WireGuard backend's `peers` (from `wg show dump`): handshake time and bytes per peer, named like
 * weft_peer_reachable (host id, else underlay IP) by matching the key to a lease's PublicKey.
 */
function wireguardPeers(n: AgentStatus['networks'][number], peers: unknown[], add: (name: string, labels: Record<string, string>, value: number) => void): void {
  for (const p of peers) {
    if (!isObj(p) || typeof p.publicKey !== 'string' || !isNum(p.latestHandshake)) continue; // udp's peers carry no keys
    const lease = n.peers.find((x) => x.backendData?.PublicKey === p.publicKey);
    const endpointIp = typeof p.endpoint === 'string' ? p.endpoint.replace(/:\d+$/, '') : undefined;
    const peer = lease?.hostId ?? lease?.publicIp ?? endpointIp ?? p.publicKey;
    const labels = { network: n.name, peer, public_key: p.publicKey };
    add('weft_wireguard_peer_last_handshake_seconds', labels, p.latestHandshake);
    if (isNum(p.rxBytes)) add('weft_wireguard_peer_receive_bytes_total', labels, p.rxBytes);
    if (isNum(p.txBytes)) add('weft_wireguard_peer_transmit_bytes_total', labels, p.txBytes);
  }
}

/** What prom-client's registry answers with (its PROMETHEUS_CONTENT_TYPE), known before it is loaded. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Observations kept before prom-client is loaded; past this many it is loaded and they are replayed. */
const MAX_PENDING = 10_000;

interface Pending {
  network: string;
  seconds: number;
  error?: string;
}

interface Loaded {
  registry: Registry;
  reconciles: Counter<'network' | 'result'>;
  reconcileSeconds: Histogram<'network'>;
}

/**
 * prom-client (with @opentelemetry/api) costs ~10 MB and a good part of the agent's start-up: it is loaded
 * at the first scrape. Until then reconciles wait in a bounded list and are replayed into it.
 */
export class AgentMetrics {
  private loaded?: Loaded;
  private loading?: Promise<Loaded>;
  private pending: Pending[] = [];

  /**
   * `status` fills the gauges and the backends' counters, `storeErrors` and `dns` (the DNS servers' counts
   * by network, growing only) the counters of the same names; all are read at scrape time.
   */
  constructor(
    private readonly status: () => AgentStatus,
    private readonly storeErrors: () => number,
    private readonly dns: () => Record<string, DnsCounts> = () => ({}),
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
      const dns = this.dns;
      for (const [name, { help, key }] of Object.entries(DNS_COUNTERS)) {
        new Counter({
          name,
          help,
          labelNames: ['network'],
          registers: [r],
          collect() {
            this.reset();
            for (const [network, c] of Object.entries(dns())) this.inc({ network }, c[key]);
          },
        });
      }
      // every gauge and status counter is refilled from one status per scrape (one younger than 100 ms is reused)
      let cache: { at: number; samples: Sample[] } | undefined;
      const current = () => {
        if (!cache || Date.now() - cache.at > 100) cache = { at: Date.now(), samples: metricsFromStatus(this.status()) };
        return cache.samples;
      };
      for (const [name, help] of Object.entries(GAUGES)) {
        new Gauge({
          name,
          help,
          labelNames: LABELS,
          registers: [r],
          collect() {
            this.reset();
            for (const s of current()) if (s.name === name) this.set(s.labels, s.value);
          },
        });
      }
      // a counter whose value is read, not added up here: reset, then one inc to the value read
      for (const [name, help] of Object.entries(STATUS_COUNTERS)) {
        new Counter({
          name,
          help,
          labelNames: LABELS,
          registers: [r],
          collect() {
            this.reset();
            for (const s of current()) if (s.name === name && s.value >= 0) this.inc(s.labels, s.value);
          },
        });
      }
      const loaded: Loaded = { registry: r, reconciles, reconcileSeconds };
      this.loaded = loaded;
      for (const p of this.pending.splice(0)) this.apply(loaded, p);
      return loaded;
    });
    return this.loading;
  }

  private apply(m: Loaded, p: Pending): void {
    m.reconciles.inc({ network: p.network, result: p.error ? 'error' : 'ok' });
    m.reconcileSeconds.observe({ network: p.network }, p.seconds);
  }

  observeReconcile(network: string, seconds: number, error?: string): void {
    const p: Pending = { network, seconds, ...(error ? { error } : {}) };
    if (this.loaded) return this.apply(this.loaded, p);
    this.pending.push(p);
    if (this.pending.length >= MAX_PENDING) void this.load();
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
  const m = /^(.+):(\d{1,5})$/.exec(addr);
  const host = m?.[1] ?? '';
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(isIPv4(host) || host === 'localhost' || host === '[::1]' || host === '[::]') || port > 65535) throw new WeftError(`${flag}: expected HOST:PORT such as 127.0.0.1:9402, got "${addr}"`);
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
